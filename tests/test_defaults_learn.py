"""What users get: every sequential diffusion model, at its shipped learning rate, init, schedule and sampler,
learns a sequential rule that popularity cannot; evaluation repeats exactly; the popularity floor is computed
right.

The data: 120 users, user u walks the 30-item ring from item (u mod 30): every item is equally frequent as a
training target, so the popularity ranking is no better than any fixed order, while the next item is always
the last one plus one. Only sizes are tiny (hidden 32, 1 block, history 10) and batches small (the data has
~600 training rows; the shipped batch sizes of 256-1024 would give 1-2 steps an epoch).
"""

import pytest
import torch

from recbole_diffusion.config import Config
from recbole_diffusion.quick_start import build
from conftest import N_ITEMS, TINY, write_inter_file

SEQUENTIAL_DIFFUSION = ["DiffuRec", "DreamRec", "SeqDiffRec", "DimeRec", "DiQDiff"]
# the sizes only: learning rate, init, schedule, sampler, losses stay the yaml's
SIZES = dict(hidden_size=32, inner_size=64, n_layers=1, n_heads=2, MAX_ITEM_LIST_LENGTH=10, train_batch_size=32)
# epochs per model at the shipped defaults (measured: each clears the margin below with room to spare)
EPOCHS = {"DiffuRec": 8, "DreamRec": 30, "SeqDiffRec": 8, "DimeRec": 8, "DiQDiff": 8}
MARGIN = 0.2  # test NDCG@10 above popularity's; popularity scores about 0.15 here, the rule 1.0


@pytest.fixture
def ring_config(workdir):
    walks = {f"u{user}": [f"i{(user + step) % N_ITEMS + 1}" for step in range(8)] for user in range(120)}
    root = write_inter_file(str(workdir / "data"), "ring", walks)
    return dict(TINY, dataset="ring", data_path=root, checkpoint_dir=str(workdir / "saved"))


def train_and_test(model, config_dict, epochs, **overrides):
    config = Config(model=model, config_dict=dict(config_dict, epochs=epochs, eval_step=epochs,
                                                   stopping_step=epochs, **overrides))
    _, train_data, valid_data, test_data, net, trainer = build(config)
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    return net, trainer, test_data, trainer.evaluate(test_data, load_best_model=False)


@pytest.fixture
def popularity_ndcg(ring_config):
    return train_and_test("SeqPop", ring_config, 1)[3]["ndcg@10"]


@pytest.mark.parametrize("model", SEQUENTIAL_DIFFUSION)
def test_shipped_defaults_beat_popularity(model, ring_config, popularity_ndcg):
    config = Config(model=model, config_dict=ring_config)
    # the shipped values (properties/model/<model>.yaml), untouched by SIZES
    assert config["learning_rate"] == 0.001
    assert config["embedding_init_std"] == (1.0 if model == "DreamRec" else 0.02)
    _, _, _, result = train_and_test(model, dict(ring_config, **SIZES), EPOCHS[model])
    assert result["ndcg@10"] > popularity_ndcg + MARGIN, (model, result["ndcg@10"], popularity_ndcg)


@pytest.mark.parametrize("model", SEQUENTIAL_DIFFUSION)
def test_two_evaluations_of_one_model_are_identical(model, toy_config):
    """The reverse chain starts from a fixed x_T per user: the same weights give the same metrics, and an
    evaluation leaves the global random state as it found it."""
    net, trainer, test_data, first = train_and_test(model, toy_config, 1, ddim_eta=1.0)  # eta 1: noisy steps
    state = torch.random.get_rng_state()
    second = trainer.evaluate(test_data, load_best_model=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert first == second
    net.eval()
    batch = next(iter(test_data))[0]
    x_T = net.start_noise(batch)
    assert torch.equal(x_T, net.start_noise(batch))
    # per user, not per batch position: the same user in another batch gets the same start
    assert torch.equal(net.start_noise(batch[torch.arange(len(batch)).flip(0)]), x_T.flip(0))


def test_popularity_counts_training_targets(ring_config, workdir):
    """SeqPop on a hand-made set: scores = how often an item is a training target; ties by item id."""
    walks = {"a": ["x", "y", "z", "y", "w", "v"], "b": ["x", "z", "y", "z", "v", "w"], "c": ["z", "y", "y", "x"]}
    root = write_inter_file(str(workdir / "pop"), "pop", walks)
    config = dict(ring_config, dataset="pop", data_path=root, topk=[5], valid_metric="NDCG@5")
    net, trainer, test_data, _ = train_and_test("SeqPop", config, 1)
    dataset = test_data._dataset
    counts = {dataset.id2token("item_id", i): int(c) for i, c in enumerate(net.item_counts) if i}
    # training targets (leave-one-out keeps the last two of each user out): a: y z y, b: z y z, c: y
    assert counts == {"x": 0, "y": 4, "z": 3, "w": 0, "v": 0}
    batch = next(iter(test_data))[0]
    scores = net.full_sort_predict(batch)[0]
    ranked = [dataset.id2token("item_id", int(i)) for i in scores[1:].argsort(descending=True) + 1]
    assert ranked[:2] == ["y", "z"]
    # the three unseen items tie at 0 and keep item-id order
    tied = [dataset.token2id("item_id", t) for t in ranked[2:]]
    assert tied == sorted(tied)


def test_dreamrec_schedules_are_the_official_ones():
    """DreamRec's named schedules, pinned against DreamRec.py's formulas (float32 as the official code)."""
    from recbole_diffusion.model.sequential_recommender.dreamrec import DreamRec

    kwargs = DreamRec.schedule_kwargs({"beta_min": 0.1, "beta_max": 10.0, "beta_start": 1e-4, "beta_end": 0.02})
    from recbole_diffusion.diffusion import get_beta_schedule

    T = 500
    linear = torch.linspace(1e-4, 0.02, T)
    x = torch.linspace(0, T, T + 1)
    abar = torch.cos(((x / T) + 0.008) / 1.008 * torch.pi * 0.5) ** 2
    abar = abar / abar[0]
    cosine = torch.clip(1 - abar[1:] / abar[:-1], 0.0001, 0.9999)
    xe = torch.linspace(1, 2 * T + 1, T)
    exp = 1 - torch.exp(-0.1 / T - xe * 0.5 * (10 - 0.1) / (T * T))
    for name, official in (("linear", linear), ("cosine", cosine), ("exp", exp)):
        ours = get_beta_schedule(name, T, **kwargs).float()
        assert torch.allclose(ours, official, rtol=1e-4, atol=1e-7), name
    abar_T = torch.cumprod(1 - get_beta_schedule("linear", T, **kwargs), 0)[-1]
    assert abar_T == pytest.approx(6.4e-3, rel=0.05)  # not the 1000/T-rescaled 3.8e-5
    # DiffuRec keeps its own (rescaled) linear schedule
    assert get_beta_schedule("linear", 32)[-1] == pytest.approx(0.02 * 1000 / 32)


@pytest.mark.parametrize("args, message", [
    (["--model=DiffuRec", "--embedding_init_std=0"], "Invalid hyperparameter embedding_init_std=0 for DiffuRec"),
    (["--model=DreamRec", "--noise_std=-1"], "Invalid hyperparameter noise_std=-1 for DreamRec"),
    (["--model=DreamRec", "--ce_loss_weight=-1"], "Invalid hyperparameter ce_loss_weight=-1 for DreamRec"),
])
def test_bad_init_or_noise_is_one_line(monkeypatch, capsys, toy_config, args, message):
    from test_cli import cli

    code, _, err = cli(monkeypatch, capsys, toy_config, *args)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
