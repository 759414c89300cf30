"""SeqDiffRec on the toy dataset: it learns, ranks, predicts the mean of k one-step denoisings, keeps the target
slot exact under trimming, and refuses bad hyperparameters with one clear line."""

import math

import pytest
import torch
from test_dreamrec import assert_one_clear_line, fit_on_toy

from recbole_diffusion import objective_function
from recbole_diffusion.config import Config
from recbole_diffusion.quick_start import build

TINY_DIFFUSION = {"diffusion_steps": 20}


def _build(config_dict, **overrides):
    config = Config(model="SeqDiffRec", config_dict=dict(config_dict, **TINY_DIFFUSION, **overrides))
    return config, build(config)


def _test_batch(model, test_data):
    """The first test batch without its longest sequences, so that the model's trimming cuts real padding."""
    model.eval()
    batch = next(iter(test_data))[0]
    batch = batch[batch["item_length"] < batch["item_id_list"].shape[1]]
    return batch, batch["item_id_list"], batch["item_length"]


def test_defaults(toy_config):
    config = Config(model="SeqDiffRec", config_dict=toy_config)
    assert config["sampler"] == "ddim" and config["sampling_steps"] == 1 and config["inference_samples"] == 4
    assert config["noise_schedule"] == "cosine" and config["rounding_input"] == "prediction"


def test_loss_falls_and_model_learns_the_ring(toy_config):
    losses, result = fit_on_toy("SeqDiffRec", toy_config, epochs=25, learning_rate=0.01)
    assert losses[-1] < 0.5 * losses[0]
    assert result["hit@5"] > 0.5  # random ranking of 30 items: ~0.17


def test_full_ranking_metrics_are_finite(toy_config):
    result = objective_function(config_dict=dict(toy_config, **TINY_DIFFUSION, model="SeqDiffRec"), saved=False)
    for split in ("best_valid_result", "test_result"):
        assert all(math.isfinite(v) and 0 <= v <= 1 for v in result[split].values())


def test_prediction_is_the_mean_of_k_one_step_denoisings(toy_config):
    """generate() = mean over k draws of f(x_T, T-1) with x_T ~ N(0, noise_std^2 I), computed here by hand on the untrimmed,
    unbucketed batch with the same noise draws; the scores are the rounding head on that mean."""
    k = 3
    _, (_, _, _, test_data, model, _) = _build(toy_config, inference_samples=k, length_buckets=3)
    batch, seq, seq_len = _test_batch(model, test_data)
    B, T = seq.shape[0], model.diffusion_steps
    assert int(seq_len.max()) < seq.shape[1]  # generate() trims the batch and buckets it; the hand computation not
    with torch.no_grad():
        generated = model.generate(batch)
        scores = model.full_sort_predict(batch)
        # in evaluation the k starts of a user are fixed; draw j of user i is row j * B + i
        noise = model.start_noise(batch, draws=k).view(k, B, -1)
        one_step = torch.stack([model(seq, seq_len, noise[j], torch.full((B,), T - 1)) for j in range(k)])
    assert torch.allclose(generated, one_step.mean(0), atol=1e-5)
    assert not torch.allclose(one_step[0], one_step[1], atol=1e-4)  # the draws differ: averaging is not trivial
    assert torch.allclose(scores, model.rounding(one_step.mean(0)), atol=1e-4)


def test_predict_scores_one_item_as_full_ranking_does(toy_config):
    _, (_, _, _, test_data, model, _) = _build(toy_config)
    batch, _, _ = _test_batch(model, test_data)
    with torch.no_grad():
        torch.manual_seed(1)
        full = model.full_sort_predict(batch)
        torch.manual_seed(1)
        one = model.predict(batch)
    assert torch.allclose(one, full.gather(1, batch["item_id"].view(-1, 1)).squeeze(1), atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_target_slot_follows_the_history(toy_config, causal):
    """x0_pred does not depend on the padding after the slot (trimming is exact); only the bidirectional encoder
    lets the history see the noised target."""
    _, (_, _, _, test_data, model, _) = _build(toy_config, causal_attention=causal, n_layers=2)
    _, seq, seq_len = _test_batch(model, test_data)
    x_t, t = torch.randn(seq.shape[0], model.hidden_size), torch.full((seq.shape[0],), 4)
    with torch.no_grad():
        out = model(seq, seq_len, x_t, t)
        assert torch.allclose(out, model(seq[:, : int(seq_len.max())], seq_len, x_t, t), atol=1e-5)
        # the first history position sees a change of the target slot's input unless attention is causal
        encoder = model.approximator.encoder
        h = torch.randn(seq.shape[0], seq.shape[1] + 1, model.hidden_size)
        mask_seq = torch.nn.functional.pad(seq, (0, 1)).scatter(1, seq_len.view(-1, 1), model.placeholder_id)
        changed = h.clone()
        changed[torch.arange(seq.shape[0]), seq_len] += torch.randn(seq.shape[0], model.hidden_size)
        first = encoder(h, mask_seq)[:, 0]
        assert torch.allclose(first, encoder(changed, mask_seq)[:, 0], atol=1e-5) == causal


@pytest.mark.parametrize("rounding_input, reaches_approximator",
                         [("prediction", True), ("final", True), ("embedding", False)])
def test_rounding_input_decides_what_the_rec_loss_trains(toy_config, rounding_input, reaches_approximator):
    """The rec loss (CE of the rounding head) trains the approximator only when it rounds the prediction; on
    E(v_T) it trains the head and the item table alone."""
    _, (_, train_data, _, _, model, _) = _build(toy_config, rounding_input=rounding_input, hidden_dropout_prob=0.0,
                                                attn_dropout_prob=0.0)
    batch = next(iter(train_data))
    model.train()
    grads = {}
    for weight in (1.0, 0.0):
        model.rec_loss_weight = weight
        model.zero_grad()
        torch.manual_seed(0)  # same t and noise: the same MSE
        model.calculate_loss(batch).backward()
        grads[weight] = [p.grad.clone() for p in model.approximator.parameters()]
        if weight:
            assert model.rounding.weight.grad.any()
    same = all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads[1.0], grads[0.0]))
    assert same != reaches_approximator


def test_tied_rounding_and_normalized_embeddings(toy_config):
    """tie_rounding: the head's W is the item table (only the bias is its own), so the rec loss reaches the table
    through the logits; normalize_embeddings: every h^0 has mean 0 and norm sqrt(H)."""
    _, (_, train_data, _, test_data, model, _) = _build(toy_config, tie_rounding=True, normalize_embeddings=True,
                                                        noise_std=1.0, rounding_input="final")
    assert model.rounding.weight is None
    H = model.hidden_size
    h = model.embed(torch.arange(1, model.n_items))
    assert torch.allclose(h.mean(-1), torch.zeros(()), atol=1e-5)
    # LayerNorm's eps (1e-5) against rows of variance 0.02^2 takes about 1% off the norm
    assert torch.allclose(h.norm(dim=-1), torch.full((), H ** 0.5), rtol=0.03)
    generated = torch.randn(4, H)
    expected = generated @ model.item_embedding.weight.t() + model.rounding.bias
    assert torch.allclose(model.item_scores(generated), expected, atol=1e-5)
    batch, _, _ = _test_batch(model, test_data)
    with torch.no_grad():
        full = model.full_sort_predict(batch)
        one = model.predict(batch)
    assert torch.allclose(one, full.gather(1, batch["item_id"].view(-1, 1)).squeeze(1), atol=1e-5)
    model.train()
    model.calculate_loss(next(iter(train_data))).backward()
    assert model.item_embedding.weight.grad[1:].abs().sum(-1).gt(0).all()  # every item's row, through the logits


@pytest.mark.parametrize(
    "args, message",
    [
        (["--inference_samples=0"], "inference_samples=0 for SeqDiffRec: must be a positive integer"),
        (["--rec_loss_weight=-1"], "rec_loss_weight=-1 for SeqDiffRec: must be a non-negative number"),
        (["--rounding_input=embeding"], "Did you mean 'embedding'?"),
        (["--hidden_dropout_prob=1.0"], "hidden_dropout_prob=1.0 for SeqDiffRec: must be a number in [0, 1)"),
    ],
)
def test_bad_input_gives_one_clear_line(monkeypatch, capsys, toy_config, args, message):
    assert_one_clear_line(monkeypatch, capsys, toy_config, "SeqDiffRec", args, message)
