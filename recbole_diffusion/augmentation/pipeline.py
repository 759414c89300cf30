"""DiffuASR as a data augmenter for any sequential model of RecBole or of this package.

    python run_recbole_diffusion.py --augment=DiffuASR --model=SASRec --dataset=beauty [--data_path=...] \
        [--aug_num=10 --aug_guidance=cf ...]

1. The dataset is loaded and split as the model would see it (RecBole's sequence augmentation and
   ``eval_args``, e.g. leave-one-out). A user's *training sequence* is the items before his first validation
   target: with leave-one-out, everything but the last two items.
2. The generator (:class:`~recbole_diffusion.augmentation.diffuasr.DiffuASR`) learns from the training
   sequences only: the first M items of each one long enough (M + 1 items or more) are the target, the rest is
   the guidance. Validation and test items are never seen.
3. For each user to augment (every user with a training sample, or only the short ones), M items are
   generated, guided by the user's training sequence, and put before its first item.
4. The augmented dataset is written as new RecBole atomic files in ``<data_path>/<name>/``, next to the
   original (which is never touched), with ``name = <dataset>-diffuasr-<hash>``; the hash covers the source
   splits and every generator setting, so equal inputs give the same folder and a changed one a new folder.
   It is pre-split (RecBole's ``benchmark_filename``): one row per (user, history, target) sample in
   ``<name>.train.inter``, ``<name>.valid.inter`` and ``<name>.test.inter``:

   * train: the original training samples, same users, same targets, in the same order; each history is the
     user's generated items followed by his original history (cut to ``MAX_ITEM_LIST_LENGTH`` from the left, as
     RecBole cuts). A generated item is therefore never a training target: RecBole's own sequence augmentation
     of a prepended .inter file would have made each generated item after the first a target, which is why the
     files are written pre-split.
   * valid and test: the original validation and test samples, targets and histories unchanged: generated
     items are used only as training context. With ``aug_eval_histories: augmented`` (the official code's protocol) the
     generated items precede these histories too, cut the same way; the targets stay the original ones.

   ``<name>.augment`` lists each augmented user's generated items (oldest first) and ``diffuasr.json`` records
   the settings and counts. Neither is read by RecBole.
5. The model is trained and tested on the original dataset and on the augmented one, and both results are
   reported side by side.
"""

import hashlib
import json
import os
import shutil
from logging import getLogger

import numpy as np
import torch
from recbole.utils import ModelType, init_seed

from recbole_diffusion.augmentation.diffuasr import NAME, DiffuASR, check_config
from recbole_diffusion.config import Config, properties_dir
from recbole_diffusion.data import create_dataset
from recbole_diffusion.utils import RecBoleDiffusionError

MANIFEST = "diffuasr.json"
# Part of every folder's hash: bump it when a change to this code changes the files written from equal settings.
FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
NOTE = ("Generated items are used only as training context: the validation and test targets and their "
        "histories are the original data's.")
NOTE_AUGMENTED = ("aug_eval_histories=augmented: the generated items also precede the validation and test "
                  "histories (the official code's protocol); the validation and test targets are the original data's.")


def diffuasr_yaml():
    return os.path.join(properties_dir(), "model", f"{NAME}.yaml")


def augmentation_config(model, dataset, config_file_list=None, config_dict=None):
    """The model's configuration on the original dataset, with DiffuASR's defaults under every user setting.

    DiffuASR's keys all start with ``aug_``, so they never collide with the model's own."""
    return Config(model=model, dataset=dataset, config_file_list=[diffuasr_yaml()] + list(config_file_list or []),
                  config_dict=config_dict)


def generator_settings(config):
    """Every setting that changes the augmented files, with the seed resolved (a plain dict)."""
    settings = {key: config[key] for key in sorted(config.final_config_dict)
                if key.startswith("aug_") and key != "aug_reuse"}
    if settings["aug_seed"] is None:
        settings["aug_seed"] = config["seed"]
    settings["aug_channel_mult"] = list(settings["aug_channel_mult"])
    settings["MAX_ITEM_LIST_LENGTH"] = config["MAX_ITEM_LIST_LENGTH"]
    return settings


# --------------------------------------------------------------------------------------------- source data
class SourceData:
    """A dataset's sequences and RecBole's split of them, as the downstream model sees them.

    Attributes (numpy arrays; internal ids of the source dataset, 0 = padding):
        items: every interaction's item, grouped by user, in time order.
        start, length: where each user's sequence starts in ``items`` and how long it is ([user_num]).
        train_length: length of each user's training sequence, the items before his first validation target.
        splits: ``{'train'|'valid'|'test': (user [R], history [R, L], history_length [R], target [R])}``.
        user_tokens, item_tokens: internal id -> token.
    """

    def __init__(self, config):
        if config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
            raise RecBoleDiffusionError(
                f"{NAME} augments the sequences of sequential models; '{config['model']}' is not one. "
                f"Use --model=SASRec, DiffuRec, ..."
            )
        if config["benchmark_filename"] is not None:
            raise RecBoleDiffusionError(
                f"{NAME} augments a dataset that RecBole splits itself (eval_args); '{config['dataset']}' is "
                f"pre-split (benchmark_filename). Use its single .inter file."
            )
        dataset = create_dataset(config)
        uid_field, iid_field, time_field = dataset.uid_field, dataset.iid_field, dataset.time_field
        if time_field is None or time_field not in dataset.inter_feat:
            raise RecBoleDiffusionError(f"{NAME} needs the time field '{config['TIME_FIELD']}' to order sequences.")
        self.uid_field, self.iid_field = uid_field, iid_field
        self.list_suffix = config["LIST_SUFFIX"]
        self.max_length = config["MAX_ITEM_LIST_LENGTH"]
        self.user_tokens = np.asarray(dataset.field2id_token[uid_field])
        self.item_tokens = np.asarray(dataset.field2id_token[iid_field])
        self.n_items = dataset.item_num

        if (config["eval_args"] or {}).get("order") != "TO":
            raise RecBoleDiffusionError(
                f"{NAME} needs a time-ordered split (eval_args order: TO, e.g. split LS); '{config['dataset']}' is "
                f"split in order {(config['eval_args'] or {}).get('order')!r}."
            )
        self.splits = {}
        for name, split in zip(SPLITS, dataset.build()):
            inter = split.inter_feat
            self.splits[name] = tuple(inter[f].numpy() for f in (
                uid_field, iid_field + self.list_suffix, config["ITEM_LIST_LENGTH_FIELD"], iid_field))
        # Each user's sequence in RecBole's own order (what the model trains and is evaluated on), read back from
        # the split: RecBole sorts by (user, time) itself, and re-sorting here would order equal timestamps
        # differently.
        sequences, train_samples = self._sequences_from_splits(dataset.user_num)
        self.length = np.array([len(seq) for seq in sequences], dtype=np.int64)
        self.start = np.concatenate([[0], np.cumsum(self.length)[:-1]]).astype(np.int64)
        self.items = np.concatenate([np.asarray(seq, dtype=np.int64) for seq in sequences] + [np.zeros(0, np.int64)])
        # A user's training samples have the targets s_2 .. s_{c+1} of his sequence: his training sequence is
        # s_1 .. s_{c+1}.
        self.train_length = np.where(train_samples > 0, train_samples + 1, 0)

    def _sequences_from_splits(self, user_num):
        """Each user's item sequence from RecBole's split rows: the first training row's history, every training
        target in row order, then the validation and test targets. Returns (list of lists, training rows per
        user)."""
        sequences = [[] for _ in range(user_num)]
        train_user, train_history, train_length, train_target = self.splits["train"]
        for row in np.argsort(train_user, kind="stable"):
            seq = sequences[train_user[row]]
            if not seq:
                seq.extend(train_history[row, : train_length[row]].tolist())
            seq.append(int(train_target[row]))
        for name in SPLITS[1:]:
            users, history, length, target = self.splits[name]
            for user, items, count, item in zip(users, history, length, target):
                if not sequences[user]:
                    sequences[user].extend(items[:count].tolist())
                sequences[user].append(int(item))
        return sequences, np.bincount(train_user, minlength=user_num)

    def windows(self, users, offset, width, end):
        """For each user u: items[start_u + offset : start_u + offset + width], cut at start_u + end_u and
        0-padded: [len(users), width]."""
        index = (self.start[users] + offset)[:, None] + np.arange(width)[None]
        inside = index < (self.start[users] + end)[:, None]
        return np.where(inside, self.items[np.minimum(index, len(self.items) - 1)], 0)

    def generator_examples(self, aug_num, guidance_length):
        """Users whose training sequence has at least aug_num + 1 items, their first aug_num items [G, M] (the
        target x_0) and the next ``guidance_length`` items [G, K] (the guidance; 0-padded)."""
        users = np.flatnonzero(self.train_length >= aug_num + 1)
        end = self.train_length[users]
        return users, self.windows(users, 0, aug_num, end), self.windows(users, aug_num, guidance_length, end)

    def users_to_augment(self, which, short_length):
        """Users with at least one training sample (only they gain anything), all or only those with at most
        ``short_length`` interactions in the dataset."""
        keep = self.train_length > 0
        if which == "short":
            keep &= self.length <= short_length
        return np.flatnonzero(keep)

    def generation_guidance(self, users, guidance_length):
        """The first ``guidance_length`` items of each user's training sequence: what the generated items precede."""
        return self.windows(users, 0, guidance_length, self.train_length[users])

    def digest(self, settings, dataset):
        """A short hash of the source splits (what the files are made of) and of the generator settings."""
        key = {"dataset": dataset, "settings": settings, "version": FORMAT_VERSION}
        h = hashlib.sha256(json.dumps(key, sort_keys=True).encode())
        for name in SPLITS:
            for array in self.splits[name]:
                h.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        for tokens in (self.user_tokens, self.item_tokens):
            h.update("\t".join(map(str, tokens)).encode())
        return h.hexdigest()[:10]

    def split_lines(self, name, prefixes=None):
        """The lines of one pre-split file; ``prefixes`` [user_num, M] (0 rows: not augmented) go before the
        histories, which are then cut to ``MAX_ITEM_LIST_LENGTH`` from the left as RecBole cuts."""
        users, history, history_length, target = self.splits[name]
        item, user = self.item_tokens, self.user_tokens
        lines = [f"{self.uid_field}:token\t{self.iid_field}{self.list_suffix}:token_seq\t{self.iid_field}:token\n"]
        for u, h, n, y in zip(users, history, history_length, target):
            items = h[:n]
            if prefixes is not None and prefixes[u, 0] > 0:
                items = np.concatenate([prefixes[u], items])[-self.max_length:]
            lines.append(f"{user[u]}\t{' '.join(item[items])}\t{item[y]}\n")
        return lines


def augmented_overrides(source, data_root):
    """The configuration that loads an augmented folder: pre-split files, histories in the item id space, no
    filtering (the source was filtered already), the source's field names and history length."""
    return {
        "data_path": data_root,
        "benchmark_filename": list(SPLITS),
        "alias_of_item_id": [source.iid_field + source.list_suffix],
        "load_col": None,
        "USER_ID_FIELD": source.uid_field,
        "ITEM_ID_FIELD": source.iid_field,
        "MAX_ITEM_LIST_LENGTH": source.max_length,
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
        "rm_dup_inter": None,
        "val_interval": None,
    }


# --------------------------------------------------------------------------------------------- generator
def derived_seed(seed, purpose):
    """A seed for one use (batch order, starting noise) that is not ``seed`` itself: a generator seeded with the
    global seed would replay the stream that initialized the item table, and the noise would be the embeddings."""
    return int(hashlib.sha256(f"{NAME}:{purpose}:{seed}".encode()).hexdigest()[:15], 16)


def train_generator(settings, n_items, prefix, guidance, device):
    """Train DiffuASR on (first M items, guidance) pairs; returns the model of the lowest epoch loss and the
    loss of every epoch (early stopping on the training loss, as the official code)."""
    seed = settings["aug_seed"]
    init_seed(seed, reproducibility=True)
    model = DiffuASR(settings, n_items).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["aug_learning_rate"])
    prefix = torch.as_tensor(prefix, dtype=torch.long, device=device)
    guidance = torch.as_tensor(guidance, dtype=torch.long, device=device)
    order = torch.Generator().manual_seed(derived_seed(seed, "batch order"))
    logger = getLogger()
    losses, best_state, since_best = [], None, 0
    for epoch in range(settings["aug_epochs"]):
        model.train()
        total = 0.0
        for rows in torch.randperm(len(prefix), generator=order).split(settings["aug_batch_size"]):
            rows = rows.to(device)
            loss = model.calculate_loss(prefix[rows], guidance[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
        losses.append(total / len(prefix))
        if best_state is None or losses[-1] < min(losses[:-1]):
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            since_best = 0
        else:
            since_best += 1
        logger.info(f"{NAME} generator epoch {epoch}: loss {losses[-1]:.4f}")
        if since_best >= settings["aug_stopping_step"]:
            break
    model.load_state_dict(best_state)
    return model, losses


def generate_prefixes(model, guidance, seed, batch_size, device):
    """M generated item ids per row of ``guidance`` [U, K] -> [U, M]. The starting noise of every row is drawn
    once from ``seed``, so a user's items do not depend on the batch he is generated in."""
    model.eval()
    noise = torch.randn(len(guidance), model.aug_num, model.aug_hidden_size,
                        generator=torch.Generator().manual_seed(derived_seed(seed, "starting noise")))
    guidance = torch.as_tensor(guidance, dtype=torch.long)
    out = [model.generate(guidance[rows].to(device), noise[rows].to(device)).cpu()
           for rows in torch.arange(len(guidance)).split(batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, model.aug_num), dtype=np.int64)


# --------------------------------------------------------------------------------------------- the files
class Augmentation:
    """An augmented dataset on disk: its name, the folder that holds it and how to load it."""

    def __init__(self, name, data_root, manifest, source, reused=False):
        self.name, self.data_root, self.manifest, self.source = name, data_root, manifest, source
        self.reused = reused  # True when an earlier run wrote the folder
        self.folder = os.path.join(data_root, name)
        self.overrides = augmented_overrides(source, data_root)


def _write_folder(folder, files):
    """Write ``{file name: lines}`` into ``folder`` all at once: into a scratch folder first, then renamed."""
    scratch = f"{folder}.partial-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    for file_name, lines in files.items():
        with open(os.path.join(scratch, file_name), "w", encoding="utf-8", newline="\n") as f:
            f.writelines(lines)
    if os.path.isdir(folder):
        if not os.path.isfile(os.path.join(folder, MANIFEST)):
            raise RecBoleDiffusionError(f"{folder} exists and is not a {NAME} folder; move it away or rename it.")
        shutil.rmtree(folder)
    os.replace(scratch, folder)


def augment_dataset(config):
    """Train the generator on ``config``'s dataset and write the augmented copy next to it (see the module
    docstring). Returns an :class:`Augmentation`; a folder already written with the same hash is reused when
    ``aug_reuse`` is True."""
    check_config(config)
    settings = generator_settings(config)
    logger = getLogger()
    source = SourceData(config)
    M = settings["aug_num"]
    data_root = os.path.dirname(os.path.normpath(config["data_path"]))
    name = f"{config['dataset']}-diffuasr-{source.digest(settings, config['dataset'])}"
    folder = os.path.join(data_root, name)
    manifest_path = os.path.join(folder, MANIFEST)
    if config["aug_reuse"] and os.path.isfile(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
        logger.info(f"{NAME}: reusing {folder}")
        return Augmentation(name, data_root, manifest, source, reused=True)

    train_users, prefix, guidance = source.generator_examples(M, settings["aug_guidance_length"])
    if len(train_users) == 0:
        longest = int(source.train_length.max())
        raise RecBoleDiffusionError(
            f"aug_num={M} is too large for '{config['dataset']}': the generator learns from training sequences "
            f"of at least aug_num + 1 = {M + 1} items (the first aug_num items are its target, the rest its "
            f"guidance), and the longest training sequence has {longest} items. "
            + (f"Use --aug_num={longest - 1} or less." if longest > 1 else "No sequence is long enough.")
        )
    logger.info(f"{NAME}: training the generator on {len(train_users)} training sequences of >= {M + 1} items")
    model, losses = train_generator(settings, source.n_items, prefix, guidance, config["device"])

    users = source.users_to_augment(settings["aug_users"], settings["aug_short_length"])
    generated = generate_prefixes(model, source.generation_guidance(users, settings["aug_guidance_length"]),
                                  settings["aug_seed"], settings["aug_batch_size"], config["device"])
    prefixes = np.zeros((len(source.length), M), dtype=np.int64)
    prefixes[users] = generated
    logger.info(f"{NAME}: generated {M} items for each of {len(users)} users")

    everywhere = settings["aug_eval_histories"] == "augmented"  # generated items before valid/test histories too
    manifest = {
        "augmenter": NAME,
        "dataset": name,
        "source_dataset": config["dataset"],
        "settings": settings,
        "users": int((source.length > 0).sum()),
        "augmented_users": int(len(users)),
        "generator_training_sequences": int(len(train_users)),
        "generator_epochs": len(losses),
        "generator_loss": {"first_epoch": losses[0], "best_epoch": min(losses)},
        "load_with": {k: v for k, v in augmented_overrides(source, data_root).items() if k != "data_path"},
        "note": NOTE_AUGMENTED if everywhere else NOTE,
    }
    item, user = source.item_tokens, source.user_tokens
    augment_lines = [f"{source.uid_field}:token\tgenerated_{source.iid_field}{source.list_suffix}:token_seq\n"]
    augment_lines += [f"{user[u]}\t{' '.join(item[prefixes[u]])}\n" for u in users]
    files = {f"{name}.{split}.inter": source.split_lines(split, prefixes if split == "train" or everywhere else None)
             for split in SPLITS}
    files[f"{name}.augment"] = augment_lines
    files[MANIFEST] = [json.dumps(manifest, indent=2, sort_keys=True) + "\n"]
    _write_folder(folder, files)
    logger.info(f"{NAME}: wrote {folder}")
    return Augmentation(name, data_root, manifest, source)


# --------------------------------------------------------------------------------------------- the pipeline
def run_augmented(model, dataset, config_file_list=None, config_dict=None, saved=True):
    """Augment ``dataset`` with DiffuASR, then train and test ``model`` on the original and on the augmented
    data with the same settings. Returns ``{'original': result, 'augmented': result, 'augmentation':
    Augmentation}``, each result as :func:`~recbole_diffusion.quick_start.run_recbole_diffusion` returns it."""
    from recbole.utils import init_logger

    from recbole_diffusion.quick_start import run_recbole_diffusion

    config = augmentation_config(model, dataset, config_file_list, config_dict)
    check_config(config)
    init_logger(config)
    augmentation = augment_dataset(config)
    files = [diffuasr_yaml()] + list(config_file_list or [])
    augmented_dict = dict(config_dict or {}, **augmentation.overrides)
    _check_overrides(Config(model=model, dataset=augmentation.name, config_file_list=files,
                            config_dict=augmented_dict), augmentation)
    original = run_recbole_diffusion(model, dataset, config_file_list=files, config_dict=config_dict, saved=saved)
    augmented = run_recbole_diffusion(model, augmentation.name, config_file_list=files,
                                      config_dict=augmented_dict, saved=saved)
    return {"original": original, "augmented": augmented, "augmentation": augmentation}


def _check_overrides(config, augmentation):
    """The command line outranks ``config_dict`` in RecBole: refuse a command-line key that would load the
    augmented files wrongly (say --load_col, or a filter meant for the original data)."""
    expected = dict(augmentation.overrides, data_path=augmentation.folder)
    for key, value in expected.items():
        if key == "data_path":
            same = os.path.abspath(config[key]) == os.path.abspath(value)
        else:
            same = config[key] == value
        if not same:
            raise RecBoleDiffusionError(
                f"--{key}={config[key]!r} cannot be used with --augment: the augmented dataset "
                f"'{augmentation.name}' needs {key}={value!r}, and the command line outranks it. Put {key} in a "
                f"--config_files yaml instead: it then applies to the original dataset only."
            )


def format_report(model, dataset, result):
    """The table printed at the end of ``--augment``: valid and test metrics, original against augmented."""
    augmentation = result["augmentation"]
    manifest = augmentation.manifest
    runs = [result["original"], result["augmented"]]
    header = (f"{model} on {dataset}: original data against data augmented by {NAME} ({augmentation.name}: "
              f"{manifest['settings']['aug_num']} generated items before the sequences of "
              f"{manifest['augmented_users']} of {manifest['users']} users)")
    rows = [header, manifest["note"], "",
            f"{'metric':<12}{'valid':>10}{'valid aug':>11}{'test':>10}{'test aug':>10}{'test change':>13}"]
    keys = list(dict.fromkeys(k for run in runs for k in list(run["best_valid_result"] or {})
                              + list(run["test_result"] or {})))
    for key in keys:
        cells = [run[part].get(key) if run[part] else None for part in ("best_valid_result", "test_result")
                 for run in runs]
        valid, valid_aug, test, test_aug = cells
        change = f"{100 * (test_aug - test) / test:+.1f}%" if test and test_aug is not None else "-"
        fmt = lambda v, w: f"{v:>{w}.4f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"  # noqa: E731
        rows.append(f"{key:<12}{fmt(valid, 10)}{fmt(valid_aug, 11)}{fmt(test, 10)}{fmt(test_aug, 10)}{change:>13}")
    rows += ["", f"augmented files: {augmentation.folder}"]
    return "\n".join(rows)
