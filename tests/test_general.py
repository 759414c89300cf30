"""The general diffusion family on a tiny general dataset: RecBole's DiffRec and T-DiffRec through our CLI, our
LDiffRecAuto (pretrained, clustered and cached item groups) and DDRM (on the shared diffusion core)."""

import math
import os
import random

import numpy as np
import pytest
import torch
from recbole.utils import init_seed
from conftest import write_inter_file
from test_cli import cli
from test_dreamrec import assert_one_clear_line

from recbole_diffusion import pretrain
from recbole_diffusion.config import Config
from recbole_diffusion.diffusion import get_beta_schedule
from recbole_diffusion.quick_start import build

N_GROUPS, GROUP_SIZE = 4, 10  # 40 items


def write_general_dataset(root, name="gtoy", n_users=60, seed=0):
    """Items 0..39 in 4 groups of 10; user u takes 8 items of group u % 4 and one item at random, so a user's
    unseen items of its own group are the ones to rank first. Item tokens are integers (as DiffRec's official
    ids), shuffled so that RecBole's internal ids differ from token + 1."""
    rng = random.Random(seed)
    histories = {}
    for user in range(1, n_users + 1):
        group = user % N_GROUPS
        items = rng.sample(range(group * GROUP_SIZE, (group + 1) * GROUP_SIZE), 8) + [rng.randrange(40)]
        histories[f"u{user}"] = list(dict.fromkeys(items))
    return write_inter_file(root, name, histories)


TINY_MODELS = {
    "DiffRec": {"dims_dnn": [32]},
    "LDiffRecAuto": {"in_dims": [16], "dims_dnn": [16], "n_cate": 2},
    "DDRM": {"dims_dnn": [32], "diffusion_steps": 5, "time_embedding_size": 4, "learning_rate": 0.01},
}


@pytest.fixture
def general_config(workdir):
    data_root = write_general_dataset(str(workdir / "data"))
    return {
        "dataset": "gtoy",
        "data_path": data_root,
        "checkpoint_dir": str(workdir / "saved"),
        "backbone_config": {"epochs": 2, "embedding_size": 8},
        "train_batch_size": 64,
        "epochs": 1,
        "state": "ERROR",
        "show_progress": False,
        "use_gpu": False,
        "seed": 2020,
    }


def config_of(model, general_config, **overrides):
    """The Config of ``model`` on the tiny set, with the global seed set as run_recbole_diffusion sets it (RecBole's
    RS split shuffles)."""
    base = "DiffRec" if model == "T-DiffRec" else model
    extra = {"time-aware": True} if model == "T-DiffRec" else {}
    config = Config(model=base, config_dict={**general_config, **TINY_MODELS[base], **extra, **overrides})
    init_seed(config["seed"], config["reproducibility"])
    return config


def fit(config, epochs):
    """Train for ``epochs`` epochs, evaluating on valid once at the end: (loss per epoch, test metrics, model)."""
    config["epochs"], config["eval_step"], config["stopping_step"] = epochs, epochs, epochs
    _, train_data, valid_data, test_data, model, trainer = build(config)
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    losses = [loss for _, loss in sorted(trainer.train_loss_dict.items())]
    return losses, trainer.evaluate(test_data, load_best_model=False), model


@pytest.mark.parametrize("model", ["DiffRec", "T-DiffRec", "LDiffRecAuto", "DDRM"])
def test_trains_loss_falls_and_metrics_are_finite(general_config, model):
    losses, result, _ = fit(config_of(model, general_config), epochs=8)
    assert losses[-1] < losses[0], losses
    assert {"recall@10", "recall@20", "ndcg@10", "ndcg@20"} <= set(result)
    assert all(math.isfinite(v) for v in result.values()), result


@pytest.mark.parametrize("args", [["--model=DiffRec"], ["--model=DiffRec", "--time-aware=True"]])
def test_diffrec_and_t_diffrec_through_our_cli(monkeypatch, capsys, general_config, args):
    # backbone_config is L-DiffRec's and DDRM's key: DiffRec does not read it, and the CLI refuses what is ignored
    config = {k: v for k, v in general_config.items() if k != "backbone_config"}
    code, out, err = cli(monkeypatch, capsys, config, "--dataset=gtoy", "--dims_dnn=[32]", *args)
    assert code == 0, err
    rows = [line.split()[0] for line in out[out.index("DiffRec on gtoy"):].splitlines()[2:]]
    assert rows[:4] == ["recall@10", "recall@20", "ndcg@10", "ndcg@20"]


def test_general_models_get_recall_and_ndcg_sequential_ones_keep_theirs(general_config):
    general = Config(model="DiffRec", config_dict=general_config)
    assert (general["metrics"], general["topk"], general["valid_metric"]) == (["Recall", "NDCG", "Hit"], [10, 20],
                                                                               "NDCG@20")
    assert general["eval_args"]["split"] == {"RS": [0.8, 0.1, 0.1]}  # RecBole's general protocol
    sequential = Config(model="SASRec", config_dict=dict(general_config, train_neg_sample_args=None))
    assert sequential["metrics"] == ["Hit", "NDCG"] and sequential["topk"] == [5, 10, 20]


def test_linear_var_schedule_is_diffrecs():
    betas = get_beta_schedule("linear_var", 10, noise_scale=0.1, noise_min=0.001, noise_max=0.02, beta_fixed=False)
    variance = 1 - torch.cumprod(1 - betas, 0)
    assert torch.allclose(variance, torch.linspace(1e-4, 2e-3, 10, dtype=torch.float64))
    fixed = get_beta_schedule("linear_var", 10, noise_scale=0.1, noise_min=0.001, noise_max=0.02)
    assert fixed[0].item() == 1e-5 and torch.equal(fixed[1:], betas[1:])


# --------------------------------------------------------------------------------------------- L-DiffRec


def counting_backbone(monkeypatch):
    calls = []
    real = pretrain.train_backbone

    def counted(config):
        calls.append(config["model"])
        return real(config)

    monkeypatch.setattr(pretrain, "train_backbone", counted)
    return calls


def test_ldiffrec_clusters_are_pretrained_once_then_reused(monkeypatch, general_config):
    calls = counting_backbone(monkeypatch)
    config = config_of("LDiffRecAuto", general_config)
    build(config)
    clusters = config["item_cluster_file"]
    cache = os.listdir(os.path.dirname(clusters))
    assert calls == ["LightGCN"] and len(cache) == 2  # the embeddings and the clusters made from them
    mtimes = {name: os.stat(os.path.join(os.path.dirname(clusters), name)).st_mtime_ns for name in cache}

    again = config_of("LDiffRecAuto", general_config)
    _, _, _, _, model, _ = build(again)
    assert calls == ["LightGCN"]  # no second pretraining
    assert again["item_cluster_file"] == clusters
    assert {name: os.stat(os.path.join(os.path.dirname(clusters), name)).st_mtime_ns for name in cache} == mtimes
    assert len(model.autoencoder.category_len) == 2 and sum(model.autoencoder.category_len) == 40

    # another backbone setting is another cache entry
    build(config_of("LDiffRecAuto", general_config, backbone_config={"epochs": 1, "embedding_size": 8}))
    assert calls == ["LightGCN", "LightGCN"]


def test_given_embedding_file_is_aligned_by_token(monkeypatch, general_config, workdir):
    """Row i of the file is item token i; its groups must come back on RecBole's internal ids, whatever they are."""
    calls = counting_backbone(monkeypatch)
    table = np.zeros((40, 4), dtype=np.float32)
    table[np.arange(40), np.arange(40) // GROUP_SIZE] = 1.0  # one-hot group of each item token
    path = str(workdir / "item_emb.npy")
    np.save(path, table)
    config = config_of("LDiffRecAuto", general_config, n_cate=4, in_dims=[8], item_emb_file=path)
    _, _, _, _, model, _ = build(config)
    assert calls == []
    tokens = model_item_tokens(config)
    cluster_ids = torch.load(config["item_cluster_file"], weights_only=True)["cluster_ids"]
    groups = {}
    for internal_id, token in enumerate(tokens[1:], start=1):
        groups.setdefault(int(token) // GROUP_SIZE, set()).add(int(cluster_ids[internal_id]))
    assert all(len(clusters) == 1 for clusters in groups.values()) and len(set.union(*groups.values())) == 4
    assert any(int(t) + 1 != i for i, t in enumerate(tokens[1:], start=1))  # ids really are shuffled


def model_item_tokens(config):
    from recbole_diffusion.data import create_dataset

    return list(create_dataset(config).field2id_token["item_id"])


def test_backbone_ignores_the_models_command_line(monkeypatch, general_config):
    config = config_of("LDiffRecAuto", general_config)
    monkeypatch.setattr("sys.argv", ["run_recbole_diffusion.py", "--embedding_size=10", "--epochs=7"])
    backbone = pretrain.backbone_config(config)
    assert backbone["embedding_size"] == 8 and backbone["epochs"] == 2  # backbone_config, not the command line
    assert backbone["data_path"] == config["data_path"] and backbone["dataset"] == "gtoy"


# --------------------------------------------------------------------------------------------- DDRM


@pytest.fixture
def ddrm(general_config):
    _, train_data, _, test_data, model, _ = build(config_of("DDRM", general_config))
    return model.eval(), test_data


def test_ddrm_reverse_chain_with_zero_steps_returns_its_start(ddrm):
    model, _ = ddrm
    user = torch.tensor([1, 2, 3])
    start, guidance = model.start_point(user), model.user_embedding(user)
    noise = model.start_noise[user]
    assert torch.equal(model.reverse(start, guidance, 0, noise), start)
    assert not torch.allclose(model.reverse(start, guidance, 3, noise), start)
    # more steps than trained: the extra ones repeat step T - 1 instead of indexing past the schedule
    assert torch.isfinite(model.reverse(start, guidance, model.diffusion.num_timesteps + 3, noise)).all()


def test_ddrm_start_is_the_mean_of_the_users_training_items(ddrm):
    model, _ = ddrm
    user = 5
    items = model.history_item_id[user][model.history_item_id[user] > 0]
    expected = model.item_embedding.weight[items].mean(0)
    assert torch.allclose(model.start_point(torch.tensor([user]))[0], expected, atol=1e-6)


def test_ddrm_scores_a_user_the_same_whatever_the_batch(ddrm):
    model, _ = ddrm
    with torch.no_grad():
        alone = model.full_sort_predict({model.USER_ID: torch.tensor([7])})
        together = model.full_sort_predict({model.USER_ID: torch.tensor([3, 7, 11])})
    assert torch.allclose(alone[0], together[1], atol=1e-5)


@pytest.mark.parametrize("freeze", [True, False])
def test_ddrm_freeze_backbone_is_an_explicit_option(general_config, freeze):
    config = config_of("DDRM", general_config, freeze_backbone=freeze)
    _, _, _, _, untrained, _ = build(config)
    before = untrained.item_embedding.weight.detach().clone()
    _, _, model = fit(config_of("DDRM", general_config, freeze_backbone=freeze), epochs=2)
    assert torch.equal(model.item_embedding.weight, before) == freeze


@pytest.mark.parametrize("mlp_lr", [None, 0.0005])
def test_ldiffrec_denoiser_learning_rate_is_the_official_lr2_option(general_config, mlp_lr):
    """mlp_learning_rate gives the denoiser MLP its own Adam rate (official lr2) and the autoencoder keeps
    learning_rate (lr1); unset, one group as RecBole. Every parameter is optimised exactly once."""
    config = config_of("LDiffRecAuto", general_config, learning_rate=0.002, mlp_learning_rate=mlp_lr)
    *_, model, trainer = build(config)
    groups = trainer.optimizer.param_groups
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(id(p) for p in model.parameters())
    if mlp_lr is None:
        assert [g["lr"] for g in groups] == [0.002]
    else:
        assert [g["lr"] for g in groups] == [0.002, mlp_lr]
        assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.mlp.parameters()}


@pytest.mark.parametrize("model", ["LDiffRecAuto", "DDRM"])
def test_saved_model_reloads_with_the_same_scores(general_config, model):
    """load_data_and_model finds the cached clusters / embeddings again and rebuilds the trained model exactly."""
    from recbole_diffusion import load_data_and_model

    config = config_of(model, general_config, epochs=2, eval_step=2)
    _, train_data, valid_data, _, trained, trainer = build(config)
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    _, loaded, _, _, _, _ = load_data_and_model(trainer.saved_model_file)
    users = {trained.USER_ID: torch.tensor([1, 2, 3])}
    with torch.no_grad():
        assert torch.allclose(loaded.eval().full_sort_predict(users), trained.eval().full_sort_predict(users))


# --------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("args, message", [
    (["--model=LDiffRecAuto", "--n_cate=41"], "n_cate=41 for LDiffRecAuto: 41 item clusters asked for, but dataset "
                                              "'gtoy' has only 40 items"),
    (["--model=LDiffRecAuto", "--item_emb_file=missing.npy"], "item_emb_file 'missing.npy' does not exist"),
    (["--model=LDiffRecAuto", "--mlp_learning_rate=-1"], "Invalid hyperparameter mlp_learning_rate=-1 for "
                                                         "LDiffRecAuto: must be a number > 0"),
    (["--model=DDRM", "--alpha=1.5"], "Invalid hyperparameter alpha=1.5 for DDRM: must be a number in [0, 1]"),
    (["--model=DDRM", "--backbone=LightGNC"], "backbone='LightGNC' for DDRM: must be one of BPR, LightGCN. Did you "
                                              "mean 'LightGCN'?"),
])
def test_bad_input_gives_one_clear_line(monkeypatch, capsys, general_config, args, message):
    assert_one_clear_line(monkeypatch, capsys, general_config, args[0].split("=")[1], ["--dataset=gtoy", *args[1:]],
                          message)


@pytest.mark.parametrize("shape, message", [
    ((40,), "of shape (40,); expected a 2-D numeric array [n_items, dim] whose row i is the embedding of item token i"),
    ((30, 4), "(30 rows, row i = item token i) has no row for item_id token '"),
])
def test_mis_shaped_embedding_file_gives_one_clear_line(monkeypatch, capsys, general_config, workdir, shape,
                                                        message):
    path = str(workdir / "bad_emb.npy")
    np.save(path, np.ones(shape, dtype=np.float32))
    assert_one_clear_line(monkeypatch, capsys, general_config, "LDiffRecAuto",
                          ["--dataset=gtoy", f"--item_emb_file={path}"], message)
