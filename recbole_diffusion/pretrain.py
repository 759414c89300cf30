"""Pretrained embeddings and item clusters for the general diffusion models, made once and cached.

L-DiffRec groups items by k-means on pretrained item embeddings; DDRM denoises pretrained user and item
embeddings. A model asks for them with a class method ``pretrained_inputs(config)`` returning a tuple drawn from
``("embeddings", "item_clusters")``. :func:`prepare`, called by ``quick_start.build`` between the data and the
model, makes or finds the files and hands the model their paths as ``config["pretrained_file"]`` and
``config["item_cluster_file"]``; both hold tensors already in the model's internal id order (row 0 = [PAD]).

The embeddings come from a RecBole backbone (``backbone``: BPR, i.e. MF with the BPR loss, or LightGCN) that our
own ``quick_start.build`` trains on the same dataset with the same data and split settings: its gradients come
from the train split only, the valid split picks its best epoch as for any model here, and the test split is
never evaluated. ``backbone_config`` overrides the backbone's own keys (``{epochs: 100, embedding_size: 64}``);
the command line belongs to the model being trained, not to the backbone.

Cache, under ``<checkpoint_dir>/pretrained/``:
  ``<dataset>-<backbone>-<key>.pth``: user and item embeddings. ``key`` hashes the train and valid splits
  themselves (tokens and internal ids), the dataset name and every setting of the backbone run except where
  files live and how runs are shown; a change of any of them gives a new file, never a stale one.
  ``<that name>-kmeans<n_cate>-seed<seed>.pth``: cluster ids from scikit-learn's KMeans, with the item embeddings
  they were computed from. With ``item_emb_file`` the name holds ``file-<key>`` instead, key = the file's
  sha256 and the dataset's item tokens.
Files are written atomically (a temporary file, then a rename).
"""

import hashlib
import json
import os
from logging import getLogger

import numpy as np
import torch

from recbole_diffusion.config import Config
from recbole_diffusion.trainer import save_checkpoint
from recbole_diffusion.utils import RecBoleDiffusionError, did_you_mean

# The RecBole keys that decide what data the backbone sees, how it is split and evaluated, and where it runs:
# copied from the model's configuration. Training keys (epochs, learning_rate, ...) are the backbone's own.
_CARRIED_KEYS = (
    "gpu_id", "use_gpu", "seed", "reproducibility", "state", "data_path", "checkpoint_dir", "show_progress",
    "save_dataset", "dataset_save_path", "log_wandb",
    "eval_args", "repeatable", "metrics", "topk", "valid_metric", "valid_metric_bigger", "eval_batch_size",
)

# Settings that say where files live or how a run is shown: left out of the cache key.
_NOT_IN_KEY = {
    "data_path", "checkpoint_dir", "state", "show_progress", "gpu_id", "use_gpu", "device", "log_wandb",
    "wandb_project", "save_dataset", "dataset_save_path", "save_dataloaders", "dataloaders_save_path",
    "eval_batch_size", "worker", "nproc", "world_size", "offset", "ip", "port", "local_rank", "single_spec",
    "config_file", "benchmark_filename_dir",
}


def _bpr_tables(model):
    return model.user_embedding.weight, model.item_embedding.weight


def _lightgcn_tables(model):
    # The propagated, layer-averaged embeddings that LightGCN scores with (and that DDRM's official code uses).
    return model.forward()


# Backbone name -> function returning its (user [n_users, d], item [n_items, d]) embedding tables.
BACKBONES = {"BPR": _bpr_tables, "LightGCN": _lightgcn_tables}


class BackboneConfig(Config):
    """The backbone's configuration: the model's data settings plus ``backbone_config``, not the command line
    (``--embedding_size=10`` given for DiffRec must not reach LightGCN)."""

    def _load_cmd_line(self):
        return {}


def backbone_config(config):
    """The Config of the backbone run for a model configured by ``config``."""
    backbone = config["backbone"]
    if backbone not in BACKBONES:
        raise RecBoleDiffusionError(
            f"Invalid hyperparameter backbone={backbone!r} for {config['model']}: must be one of "
            f"{', '.join(BACKBONES)}.{did_you_mean(str(backbone), list(BACKBONES))}"
        )
    overrides = config["backbone_config"] or {}
    if not isinstance(overrides, dict):
        raise RecBoleDiffusionError(
            f"Invalid hyperparameter backbone_config={overrides!r} for {config['model']}: must be a mapping of "
            f"RecBole keys, e.g. {{epochs: 100, embedding_size: 64}}."
        )
    dataset_keys = set(config.parameters["Dataset"])
    carried = {
        key: config[key]
        for key in list(_CARRIED_KEYS) + sorted(dataset_keys)
        if key in config.final_config_dict
    }
    carried["data_path"] = os.path.dirname(config["data_path"])  # RecBole's final data_path ends in /<dataset>
    return BackboneConfig(model=backbone, dataset=config["dataset"], config_dict=dict(carried, **overrides))


def _fingerprint(dataset):
    """sha256 of a split's interactions (internal ids) and of the token behind every internal id."""
    digest = hashlib.sha256()
    for field in (dataset.uid_field, dataset.iid_field):
        digest.update("\x1f".join(map(str, dataset.field2id_token[field])).encode())
        digest.update(np.ascontiguousarray(dataset.inter_feat[field].numpy()).tobytes())
    return digest.hexdigest()


def _digest(material):
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cache_dir(config):
    path = os.path.join(config["checkpoint_dir"], "pretrained")
    os.makedirs(path, exist_ok=True)
    return path


def align_by_token(table, row_tokens, dataset, field, source):
    """Rows of ``table`` [R, d], row r named by ``row_tokens[r]``, put in ``dataset``'s internal id order of
    ``field``: returns [n, d] with row 0 ([PAD]) zero. A token of the dataset without a row is an error."""
    tokens = dataset.field2id_token[field]
    position = {str(token): row for row, token in enumerate(row_tokens)}
    missing = [str(token) for token in tokens[1:] if str(token) not in position]
    if missing:
        raise RecBoleDiffusionError(
            f"{source} has no row for {field} token '{missing[0]}' ({len(missing)} of {len(tokens) - 1} "
            f"{field} tokens of dataset '{dataset.dataset_name}' have none): it belongs to another dataset or split."
        )
    index = torch.tensor([position[str(token)] for token in tokens[1:]], dtype=torch.long)
    aligned = torch.zeros(len(tokens), table.shape[1], dtype=torch.float32)
    aligned[1:] = table[index].float()
    return aligned


def load_item_embedding_file(path, dataset):
    """An ``item_emb_file`` ([n, d] .npy, row i = item token i, like DiffRec's official ``item_emb.npy``),
    aligned to ``dataset``'s internal item ids: [item_num, d]. (Its existence is checked by the model's
    ``check_config``, before any data is loaded.)"""
    try:
        table = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise RecBoleDiffusionError(f"item_emb_file '{path}' is not a readable .npy array ({err}).") from None
    if table.ndim != 2 or 0 in table.shape or not np.issubdtype(table.dtype, np.number):
        raise RecBoleDiffusionError(
            f"item_emb_file '{path}' holds a {table.dtype} array of shape {table.shape}; expected a 2-D numeric "
            f"array [n_items, dim] whose row i is the embedding of item token i."
        )
    rows = [str(i) for i in range(table.shape[0])]
    source = f"item_emb_file '{path}' ({table.shape[0]} rows, row i = item token i)"
    return align_by_token(torch.from_numpy(table.astype(np.float32)), rows, dataset, dataset.iid_field, source)


def train_backbone(config):
    """Train the backbone configured by ``config`` (a :class:`BackboneConfig`) and return its best epoch's
    embeddings: ``{"user_tokens", "item_tokens", "user_embedding" [n_users, d], "item_embedding" [n_items, d]}``."""
    from recbole_diffusion.quick_start import build

    _, train_data, valid_data, _, model, trainer = build(config)
    trainer.fit(train_data, valid_data, saved=True, show_progress=config["show_progress"])
    if os.path.isfile(trainer.saved_model_file):
        trainer._load_weights(trainer.saved_model_file)
        os.remove(trainer.saved_model_file)
    model.eval()
    with torch.no_grad():
        users, items = BACKBONES[config["model"]](model)
    dataset = train_data._dataset
    return {
        "user_tokens": [str(t) for t in dataset.field2id_token[dataset.uid_field]],
        "item_tokens": [str(t) for t in dataset.field2id_token[dataset.iid_field]],
        "user_embedding": users.detach().cpu().float(),
        "item_embedding": items.detach().cpu().float(),
    }


def pretrained_embeddings(config, train_dataset, valid_dataset):
    """Path of the cached backbone embeddings for ``config``'s model, training the backbone on a cache miss."""
    backbone = backbone_config(config)
    settings = {k: v for k, v in backbone.final_config_dict.items() if k not in _NOT_IN_KEY}
    key = _digest({
        "dataset": config["dataset"],
        "train": _fingerprint(train_dataset),
        "valid": _fingerprint(valid_dataset),
        "backbone": backbone["model"],
        "settings": settings,
    })
    path = os.path.join(_cache_dir(config), f"{config['dataset']}-{backbone['model']}-{key}.pth")
    logger = getLogger()
    if os.path.isfile(path):
        logger.info(f"Pretrained {backbone['model']} embeddings found: {path}")
        return path
    logger.info(f"Pretraining {backbone['model']} on {config['dataset']} for {config['model']} (cached in {path})")
    tables = train_backbone(backbone)
    what = f"the {backbone['model']} backbone's embeddings"
    save_checkpoint({
        "backbone": backbone["model"],
        "key": key,
        "user_embedding": align_by_token(tables["user_embedding"], tables["user_tokens"], train_dataset,
                                         train_dataset.uid_field, what),
        "item_embedding": align_by_token(tables["item_embedding"], tables["item_tokens"], train_dataset,
                                         train_dataset.iid_field, what),
    }, path)
    return path


def check_n_cate(config, dataset):
    """More clusters than items is an error (KMeans could not run)."""
    n_cate, n_items = config["n_cate"], dataset.item_num - 1
    if n_cate > n_items:
        raise RecBoleDiffusionError(
            f"Invalid hyperparameter n_cate={n_cate} for {config['model']}: {n_cate} item clusters asked for, but "
            f"dataset '{config['dataset']}' has only {n_items} items. Use --n_cate=<2..{n_items}> (1 = no clustering)."
        )


def kmeans_clusters(item_embedding, n_cate, seed):
    """KMeans (scikit-learn, seeded) on item rows 1.. of ``item_embedding`` [n_items, d] -> cluster ids [n_items]
    (LongTensor, -1 for [PAD]). Every cluster must hold at least one item."""
    from sklearn.cluster import KMeans

    points = item_embedding[1:].double().numpy()
    labels = KMeans(n_clusters=n_cate, n_init=10, random_state=seed).fit_predict(points)
    sizes = np.bincount(labels, minlength=n_cate)
    if (sizes == 0).any():
        raise RecBoleDiffusionError(
            f"KMeans found only {(sizes > 0).sum()} distinct groups among the item embeddings for n_cate={n_cate} "
            f"(many identical embeddings): lower --n_cate."
        )
    cluster_ids = torch.full((item_embedding.shape[0],), -1, dtype=torch.long)
    cluster_ids[1:] = torch.from_numpy(labels).long()
    return cluster_ids


def item_clusters(config, train_dataset, valid_dataset):
    """Path of the cached item clusters for ``config``'s model (``n_cate`` groups), made on a cache miss from
    ``item_emb_file`` or from the pretrained backbone's item embeddings."""
    check_n_cate(config, train_dataset)
    n_cate, seed = config["n_cate"], config["seed"]
    emb_file = config["item_emb_file"]
    if emb_file:
        item_embedding = load_item_embedding_file(emb_file, train_dataset)
        with open(emb_file, "rb") as f:
            file_sha = hashlib.sha256(f.read()).hexdigest()
        tokens = "\x1f".join(map(str, train_dataset.field2id_token[train_dataset.iid_field]))
        stem = f"{config['dataset']}-file-{_digest({'file': file_sha, 'items': tokens})}"
        source = f"item_emb_file '{emb_file}'"
    else:
        embeddings_path = pretrained_embeddings(config, train_dataset, valid_dataset)
        item_embedding = None
        stem = os.path.basename(embeddings_path)[: -len(".pth")]
        source = embeddings_path
    path = os.path.join(_cache_dir(config), f"{stem}-kmeans{n_cate}-seed{seed}.pth")
    if os.path.isfile(path):
        getLogger().info(f"Item clusters found: {path}")
        return path
    if item_embedding is None:
        item_embedding = torch.load(embeddings_path, map_location="cpu", weights_only=True)["item_embedding"]
    cluster_ids = kmeans_clusters(item_embedding, n_cate, seed)
    save_checkpoint({"cluster_ids": cluster_ids, "item_embedding": item_embedding, "source": source,
                     "n_cate": n_cate, "seed": seed}, path)
    getLogger().info(f"Item clusters of {source}: sizes {torch.bincount(cluster_ids[1:]).tolist()}, cached in {path}")
    return path


def prepare(config, train_dataset, valid_dataset):
    """Make (or find) what ``config``'s model asks for through ``pretrained_inputs(config)`` and put the paths in
    ``config["pretrained_file"]`` / ``config["item_cluster_file"]``. Models that ask nothing are left alone."""
    ask = getattr(config.model_class, "pretrained_inputs", None)
    needs = ask(config) if ask is not None else ()
    if "embeddings" in needs:
        config["pretrained_file"] = pretrained_embeddings(config, train_dataset, valid_dataset)
    if "item_clusters" in needs:
        config["item_cluster_file"] = item_clusters(config, train_dataset, valid_dataset)
