"""DiffuRec end to end on the toy dataset: it trains, learns, ranks, is deterministic and round-trips."""

import math

import torch

from recbole_diffusion import load_data_and_model, objective_function, run_recbole_diffusion
from recbole_diffusion.config import Config
from recbole_diffusion.quick_start import build
from recbole_diffusion.registry import get_trainer

METRICS = ["hit@5", "hit@10", "hit@20", "ndcg@5", "ndcg@10", "ndcg@20"]


def _build(config_dict, **overrides):
    config = Config(model="DiffuRec", config_dict=dict(config_dict, **overrides))
    return config, build(config)


def test_protocol_defaults(toy_config):
    config = Config(model="DiffuRec", config_dict=toy_config)
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}
    assert config["eval_args"]["order"] == "TO" and config["eval_args"]["mode"] == {"valid": "full", "test": "full"}
    assert config["train_neg_sample_args"]["distribution"] == "none"
    assert config["valid_metric"] == "NDCG@10" and config["topk"] == [5, 10, 20]
    # paper defaults from properties/model/DiffuRec.yaml, below the tiny overrides
    assert config["diffusion_steps"] == 32 and config["noise_schedule"] == "trunc_lin"
    assert config["lambda_uncertainty"] == 0.001 and config["emb_dropout"] == 0.3


def test_loss_falls_and_model_learns_the_ring(toy_config):
    _, (_, train_data, valid_data, _, model, trainer) = _build(
        toy_config, epochs=25, learning_rate=0.01, eval_step=25, stopping_step=100
    )
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    losses = [trainer.train_loss_dict[e] for e in sorted(trainer.train_loss_dict)]
    assert losses[-1] < 0.5 * losses[0]
    result = trainer.evaluate(valid_data, load_best_model=False)
    # 30 items: random ranking gives Hit@5 ~ 0.17; the ring is learnable
    assert result["hit@5"] > 0.5


def test_full_ranking_metrics_are_finite(toy_config):
    result = objective_function(config_dict=dict(toy_config, model="DiffuRec"), saved=False)
    for split in ("best_valid_result", "test_result"):
        assert list(result[split]) == METRICS
        assert all(math.isfinite(v) and 0 <= v <= 1 for v in result[split].values())


def test_same_seed_same_metrics(toy_config):
    first = objective_function(config_dict=dict(toy_config, model="DiffuRec"), saved=False)
    second = objective_function(config_dict=dict(toy_config, model="DiffuRec"), saved=False)
    assert first["test_result"] == second["test_result"]
    assert first["best_valid_result"] == second["best_valid_result"]


def test_trimming_and_length_buckets_are_exact(toy_config):
    """Outputs with the batch cut into length buckets equal outputs with the full padding."""
    _, (_, _, _, test_data, model, _) = _build(toy_config, lambda_uncertainty=0.0, length_buckets=3)
    model.eval()
    batch = next(iter(test_data))[0]
    seq, seq_len = batch["item_id_list"], batch["item_length"]
    buckets = list(model.length_buckets_of(batch))
    assert len(buckets) == 3 and buckets[0][1].shape[1] < seq.shape[1]
    assert sorted(torch.cat([rows for rows, _, _ in buckets]).tolist()) == list(range(seq.shape[0]))
    x_t, t = torch.randn(seq.shape[0], model.hidden_size), torch.full((seq.shape[0],), 7)
    with torch.no_grad():
        bucketed = model.map_length_buckets(
            batch, lambda rows, s, lengths: model(s, lengths, model.encode_history(s), x_t[rows], t[rows])
        )
        full = model(seq, seq_len, model.encode_history(seq), x_t, t)
        model.trim_batches = False
        assert list(model.length_buckets_of(batch))[0][1].shape == seq.shape
    assert torch.allclose(bucketed, full, atol=1e-5)


def test_official_attention_sees_padding(toy_config):
    """With the official masking the output depends on the amount of padding; with key_padding it does not."""
    for mode, depends in (("official", True), ("key_padding", False)):
        _, (_, _, _, test_data, model, _) = _build(toy_config, attention_mask=mode, lambda_uncertainty=0.0)
        model.eval()
        batch = next(iter(test_data))[0]
        seq, seq_len = batch["item_id_list"][:4], batch["item_length"][:4]
        padded = torch.cat([seq, torch.zeros(4, 5, dtype=seq.dtype)], dim=1)
        x_t, t = torch.randn(4, model.hidden_size), torch.full((4,), 3)
        with torch.no_grad():
            a = model(seq, seq_len, model.encode_history(seq), x_t, t)
            b = model(padded, seq_len, model.encode_history(padded), x_t, t)
        assert (not torch.allclose(a, b, atol=1e-4)) == depends, mode


def test_ddim_few_steps_runs_and_counts_steps(toy_config):
    _, (_, _, _, test_data, model, _) = _build(toy_config, sampler="ddim", sampling_steps=4, length_buckets=1)
    model.eval()
    calls = []
    original = model.forward
    model.forward = lambda *args: calls.append(1) or original(*args)
    batch = next(iter(test_data))[0]
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
    assert scores.shape == (batch["item_id_list"].shape[0], model.n_items)
    assert len(calls) == 4 and torch.isfinite(scores).all()


def test_checkpoint_round_trip(toy_config):
    result = run_recbole_diffusion(model="DiffuRec", config_dict=dict(toy_config, epochs=2), saved=True)
    path = result["model_file"]
    config, model, _, _, _, test_data = load_data_and_model(path)
    assert config["model"] == "DiffuRec" and config["hidden_size"] == 16
    checkpoint = torch.load(path, weights_only=True)  # plain tensors and values only
    for key, value in checkpoint["state_dict"].items():
        assert torch.equal(model.state_dict()[key], value)
    # the best-model evaluation path loads the same file safely
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    reloaded = trainer.evaluate(test_data, load_best_model=True, model_file=path)
    assert set(reloaded) == set(result["test_result"])
    assert all(math.isfinite(v) for v in reloaded.values())


def test_resume_continues_from_checkpoint(toy_config):
    first = run_recbole_diffusion(model="DiffuRec", config_dict=dict(toy_config, epochs=1), saved=True)
    config, (_, train_data, valid_data, _, model, trainer) = _build(toy_config, epochs=3)
    trainer.resume_checkpoint(first["model_file"])
    assert trainer.start_epoch == 1
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    assert sorted(trainer.train_loss_dict) == [1, 2]


def _learning_rates(trainer):
    """Record the learning rate every epoch trains at (read inside the epoch, after the schedule set it)."""
    rates = {}
    train_batch = trainer.model.calculate_loss

    def recording(interaction):
        rates.setdefault(trainer._epoch_in_progress, trainer.optimizer.param_groups[0]["lr"])
        return train_batch(interaction)

    trainer.model.calculate_loss = recording
    return rates


def test_step_decay_of_the_learning_rate_survives_a_resume(toy_config):
    schedule = dict(toy_config, learning_rate=0.01, lr_step_size=2, lr_gamma=0.5, eval_step=1, stopping_step=100)
    _, (_, train_data, valid_data, _, _, trainer) = _build(schedule, epochs=5)
    rates = _learning_rates(trainer)
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    assert [rates[e] for e in range(5)] == [0.01, 0.01, 0.005, 0.005, 0.0025]

    # a run stopped after epoch 3 (index 2) and resumed goes on at the schedule's rate, not the saved one
    first = run_recbole_diffusion(model="DiffuRec", config_dict=dict(schedule, epochs=3), saved=True)
    _, (_, train_data, valid_data, _, _, trainer) = _build(schedule, epochs=5)
    trainer.resume_checkpoint(first["model_file"])
    rates = _learning_rates(trainer)
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    assert rates == {3: 0.005, 4: 0.0025}

    # no schedule: the rate stays where it was set
    _, (_, train_data, valid_data, _, _, trainer) = _build(dict(toy_config, learning_rate=0.01), epochs=3)
    rates = _learning_rates(trainer)
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    assert set(rates.values()) == {0.01}


def test_decay_on_plateau_then_early_stopping(toy_config, monkeypatch):
    """Scripted validation scores 0.5, 0.4, 0.4, ... with patience 1: RecBole stops after epoch 3; one plateau
    decay instead multiplies the rate by gamma there and gives the patience afresh, so it stops after epoch 5."""
    from recbole.trainer import Trainer

    def scripted(trainer, valid_data, show_progress=False):
        return (0.5 if trainer._epoch_in_progress == 0 else 0.4), {"ndcg@10": 0.0}

    monkeypatch.setattr(Trainer, "_valid_epoch", scripted)
    settings = dict(toy_config, learning_rate=0.01, eval_step=1, stopping_step=1, lr_gamma=0.5)
    _, (_, train_data, valid_data, _, _, trainer) = _build(settings, epochs=20)
    rates = _learning_rates(trainer)
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    assert rates == {0: 0.01, 1: 0.01, 2: 0.01}  # no decay: RecBole's early stopping alone

    _, (_, train_data, valid_data, _, _, trainer) = _build(dict(settings, lr_plateau_decays=1), epochs=20)
    rates = _learning_rates(trainer)
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    assert rates == {0: 0.01, 1: 0.01, 2: 0.01, 3: 0.005, 4: 0.005}
    assert trainer.optimizer.param_groups[0]["plateau_decays"] == 1  # saved with the optimizer: resumable


def test_encoder_last_row_equals_full_sequence_output():
    """The one-query fast path of the last block equals reading the full output, causal or not."""
    from recbole_diffusion.model.layers import TransformerEncoder

    torch.manual_seed(0)
    seq = torch.tensor([[3, 4, 5, 0, 0], [1, 2, 3, 4, 5], [7, 0, 0, 0, 0]])
    lengths = torch.tensor([3, 5, 1])
    x = torch.randn(3, 5, 8)
    for causal in (False, True):
        enc = TransformerEncoder(2, 2, 8, 16, 0.0, 0.0, causal=causal).eval()
        full = enc(x, seq)
        last = enc(x, seq, lengths - 1)
        assert torch.allclose(full[torch.arange(3), lengths - 1], last, atol=1e-5)
    # causal: position 0 does not see position 1
    enc = TransformerEncoder(1, 1, 8, 16, 0.0, 0.0, causal=True).eval()
    y = x.clone()
    y[:, 1] += 1.0
    assert torch.allclose(enc(x, seq)[:, 0], enc(y, seq)[:, 0], atol=1e-6)
