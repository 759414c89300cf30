"""DimeRec on the toy dataset: it trains, ranks, stays on the unit hypersphere, and refuses bad hyperparameters."""

import math

import pytest
import torch
from test_cli import test_bad_input_gives_one_clear_line as expect_one_clear_line

from recbole_diffusion import objective_function
from recbole_diffusion.config import Config
from recbole_diffusion.quick_start import build

TINY_DIMEREC = {"num_interests": 3, "num_negatives": 16, "diffusion_steps": 60}


def _build(config_dict, **overrides):
    config = Config(model="DimeRec", config_dict={**config_dict, **TINY_DIMEREC, **overrides})
    return build(config)


@pytest.mark.parametrize("gem_type", ["model", "rule"])
def test_loss_falls_and_model_learns_the_ring(toy_config, gem_type):
    _, train_data, valid_data, _, _, trainer = _build(
        toy_config, gem_type=gem_type, epochs=10, learning_rate=0.01, eval_step=10, stopping_step=100
    )
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    losses = [trainer.train_loss_dict[e] for e in sorted(trainer.train_loss_dict)]
    assert losses[-1] < 0.6 * losses[0]
    result = trainer.evaluate(valid_data, load_best_model=False)
    assert all(math.isfinite(v) for v in result.values())
    # 30 items: random ranking gives Hit@5 ~ 0.17; the ring is learnable
    assert result["hit@5"] > 0.5


def test_full_ranking_metrics_are_finite(toy_config):
    result = objective_function(config_dict=dict(toy_config, **TINY_DIMEREC, model="DimeRec"), saved=False)
    for split in ("best_valid_result", "test_result"):
        assert list(result[split]) == ["hit@5", "hit@10", "hit@20", "ndcg@5", "ndcg@10", "ndcg@20"]
        assert all(math.isfinite(v) and 0 <= v <= 1 for v in result[split].values())


def test_full_softmax_is_the_sampled_softmax_over_every_item(toy_config):
    """num_negatives ~ scores every item but the padding: the sampled softmax with every item id as a negative
    (the target masked out of them as an accidental hit) is the same loss."""
    model = _build(toy_config, num_negatives=None)[4]
    torch.manual_seed(0)
    query = torch.nn.functional.normalize(torch.randn(6, model.item_embedding.weight.shape[1]), dim=-1)
    target = torch.randint(1, model.n_items, (6,))
    every_item = torch.arange(1, model.n_items)
    full = model.sampled_softmax(query, target, None)
    assert torch.allclose(full, model.sampled_softmax(query, target, every_item), atol=1e-5)
    # fewer negatives make an easier softmax: a smaller loss for every row
    assert (model.sampled_softmax(query, target, every_item[:5]) < full).all()


@pytest.mark.parametrize("sampler, steps", [("ancestral", None), ("ddim", 3)])
def test_everything_stays_on_the_unit_sphere(toy_config, sampler, steps):
    _, _, _, test_data, model, _ = _build(toy_config, sampler=sampler, sampling_steps=steps, ddim_eta=0.5)
    batch = next(iter(test_data))[0]
    x0 = torch.nn.functional.normalize(model.item_embedding(batch["item_id"]), dim=-1)
    # training: x_t is the noised target projected back onto the sphere, and the denoiser's x0_pred is unit too
    t, _, x_t = model.sample_training_noise(x0)
    guidance, real = model.extract_guidance(batch["item_id_list"], batch["item_length"])
    ones = torch.ones(x0.shape[0])
    assert torch.allclose(x_t.norm(dim=-1), ones, atol=1e-5)
    assert torch.allclose(model(x_t, t, guidance, real).norm(dim=-1), ones, atol=1e-5)
    # the noise is not negligible: the noisiest step lands far from x0
    far = model.diffusion.q_sample(x0, torch.full_like(t, model.diffusion_steps - 1))
    assert (far * x0).sum(-1).abs().mean() < 0.5
    model.eval()
    with torch.no_grad():
        generated = model.generate(batch)
        scores = model.item_scores(generated)
        items = torch.nn.functional.normalize(model.item_embedding(batch["item_id"]), dim=-1)
    assert torch.allclose(generated.norm(dim=-1), ones, atol=1e-5)
    # items are scored by cosine with the unit generated vector
    assert scores.abs().max() <= 1 + 1e-5
    assert torch.allclose((generated * items).sum(-1), scores.gather(1, batch["item_id"][:, None]).squeeze(1),
                          atol=1e-5)
    assert model.full_sort_predict(batch).shape == scores.shape


def test_every_reverse_step_is_projected(toy_config):
    """Each intermediate x_t of the reverse chain has unit norm (Algorithm 2, line 6), x_T included."""
    _, _, _, test_data, model, _ = _build(toy_config, sampler="ancestral")
    model.eval()
    batch = next(iter(test_data))[0]
    seen = []
    forward = model.forward
    model.forward = lambda x_t, *args: seen.append(x_t.norm(dim=-1)) or forward(x_t, *args)
    with torch.no_grad():
        model.generate(batch)
    assert len(seen) == model.diffusion_steps
    assert torch.allclose(torch.stack(seen), torch.ones(len(seen), seen[0].shape[0]), atol=1e-5)


def test_guidance_extraction(toy_config):
    """Rule-based: the last K items (+ recency positions), short histories masked. Model-based: K interests that
    ignore padding, so a batch cut to its longest sequence gives the same guidance."""
    _, _, _, test_data, model, _ = _build(toy_config, gem_type="rule", num_interests=8)
    batch = next(iter(test_data))[0]
    seq, lengths = batch["item_id_list"], batch["item_length"]
    guidance, real = model.extract_guidance(seq, lengths)
    assert real.sum(-1).tolist() == lengths.clamp(max=8).tolist()
    row = int(torch.argmax(lengths))
    last = seq[row, lengths[row] - 8: lengths[row]]
    expected = model.item_embedding(last) + model.position_embedding(torch.arange(7, -1, -1))
    assert torch.allclose(guidance[row], expected)

    _, _, _, test_data, model, _ = _build(toy_config, gem_type="model")
    guidance, real = model.extract_guidance(seq, lengths)
    assert guidance.shape == (seq.shape[0], 3, model.hidden_size) and bool(real.all())
    padded = torch.cat([seq, torch.zeros_like(seq[:, :4])], dim=1)
    assert torch.allclose(model.extract_guidance(padded, lengths)[0], guidance, atol=1e-6)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--num_interests=0"], "num_interests=0 for DimeRec: must be a positive integer"),
        (["--num_negatives=0"], "num_negatives=0 for DimeRec: must be a positive integer"),
        (["--temperature=0"], "temperature=0 for DimeRec: must be a number > 0"),
        (["--temperature=-0.1"], "temperature=-0.1 for DimeRec: must be a number > 0"),
        (["--lambda_recon=-1"], "lambda_recon=-1 for DimeRec: must be a non-negative number"),
        (["--mu_ssm=-0.5"], "mu_ssm=-0.5 for DimeRec: must be a non-negative number"),
        (["--hidden_dropout_prob=1.0"], "hidden_dropout_prob=1.0 for DimeRec: must be a number in [0, 1)"),
        (["--gem_type=rules"], "gem_type='rules' for DimeRec: must be one of rule, model. Did you mean 'rule'?"),
    ],
)
def test_bad_hyperparameter_gives_one_clear_line(monkeypatch, capsys, toy_config, args, message):
    expect_one_clear_line(monkeypatch, capsys, toy_config, ["--model=DimeRec", *args], message)
