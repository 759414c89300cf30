"""DreamRec on the toy dataset: it learns by MSE alone, ranks, guides as (1 + w) f_c - w f_null, and refuses bad
guidance hyperparameters with one clear line."""

import math

import pytest
import torch
from test_cli import cli

from recbole_diffusion import objective_function
from recbole_diffusion.config import Config
from recbole_diffusion.diffusion import get_beta_schedule
from recbole_diffusion.quick_start import build

TINY_DIFFUSION = {"diffusion_steps": 20}


def _build(config_dict, **overrides):
    config = Config(model="DreamRec", config_dict=dict(config_dict, **TINY_DIFFUSION, **overrides))
    return config, build(config)


def fit_on_toy(model, toy_config, epochs, **overrides):
    """Train ``model`` on the toy set, evaluating once at the end: (train loss per epoch, validation metrics)."""
    config = Config(model=model, config_dict=dict(toy_config, **TINY_DIFFUSION, epochs=epochs, eval_step=epochs,
                                                  stopping_step=epochs, **overrides))
    _, train_data, valid_data, _, _, trainer = build(config)
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    losses = [loss for _, loss in sorted(trainer.train_loss_dict.items())]
    return losses, trainer.evaluate(valid_data, load_best_model=False)


def assert_one_clear_line(monkeypatch, capsys, toy_config, model, args, message):
    """The CLI with a bad hyperparameter exits with code 2 and one line naming it, no traceback."""
    code, _, err = cli(monkeypatch, capsys, toy_config, f"--model={model}", *args)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err


def _batch_and_guidance(model, test_data):
    model.eval()
    batch = next(iter(test_data))[0]
    with torch.no_grad():
        guidance = model.encode_guidance(batch)
    return batch, guidance


def test_paper_defaults(toy_config):
    config = Config(model="DreamRec", config_dict=toy_config)
    assert config["diffusion_steps"] == 500 and config["noise_schedule"] == "exp"
    assert config["guidance_weight"] == 2.0 and config["p_uncond"] == 0.1 and config["learner"] == "adamw"
    assert config["sampler"] == "ddim" and config["sampling_steps"] == 10


def test_exp_schedule_takes_beta_min_and_beta_max(toy_config):
    _, (_, _, _, _, model, _) = _build(toy_config, noise_schedule="exp", beta_min=0.2, beta_max=5.0)
    expected = get_beta_schedule("exp", 20, beta_min=0.2, beta_max=5.0).float()
    assert torch.allclose(model.diffusion.betas, expected)
    assert not torch.allclose(expected, get_beta_schedule("exp", 20).float())


def test_loss_falls_and_model_learns_the_ring(toy_config):
    losses, result = fit_on_toy("DreamRec", toy_config, epochs=10, learning_rate=0.01)
    assert losses[-1] < 0.5 * losses[0]
    # 30 items: random ranking gives Hit@5 ~ 0.17; the next item of the ring is learnable without negatives
    assert result["hit@5"] > 0.5


def test_full_ranking_metrics_are_finite(toy_config):
    result = objective_function(config_dict=dict(toy_config, **TINY_DIFFUSION, model="DreamRec"), saved=False)
    for split in ("best_valid_result", "test_result"):
        assert all(math.isfinite(v) and 0 <= v <= 1 for v in result[split].values())


def test_guidance_weight_zero_is_the_conditional_prediction(toy_config):
    _, (_, _, _, test_data, model, _) = _build(toy_config, guidance_weight=0.0)
    batch, guidance = _batch_and_guidance(model, test_data)
    x_t, t = torch.randn(guidance.shape), torch.full((guidance.shape[0],), 11)
    with torch.no_grad():
        assert torch.equal(model.guided_prediction(x_t, guidance, t), model(x_t, guidance, t))
        # the whole chain too: generate() equals the reverse chain of the conditional denoiser
        generated = model.generate(batch)
        conditional = model.reverse(lambda x, step: model(x, guidance, step), model.start_noise(batch))
    assert torch.allclose(generated, conditional, atol=1e-5)


def test_guidance_weight_mixes_conditional_and_null(toy_config):
    _, (_, _, _, test_data, model, _) = _build(toy_config, guidance_weight=2.0)
    _, guidance = _batch_and_guidance(model, test_data)
    x_t, t = torch.randn(guidance.shape), torch.full((guidance.shape[0],), 5)
    with torch.no_grad():
        cond = model(x_t, guidance, t)
        null = model(x_t, model.null_guidance.expand_as(guidance), t)
        guided = model.guided_prediction(x_t, guidance, t)
    assert torch.allclose(guided, 3 * cond - 2 * null, atol=1e-5)
    assert not torch.allclose(guided, cond, atol=1e-3)


@pytest.mark.parametrize("p_uncond, untrained", [(1.0, "guidance_encoder"), (0.0, "null_guidance")])
def test_p_uncond_decides_which_guidance_is_trained(toy_config, p_uncond, untrained):
    """p_uncond = 1 trains only the null token (the encoder gets no gradient); p_uncond = 0 never uses it."""
    _, (_, train_data, _, _, model, _) = _build(toy_config, p_uncond=p_uncond)
    model.train()
    model.calculate_loss(next(iter(train_data))).backward()
    for name, param in model.named_parameters():
        no_grad = param.grad is None or not param.grad.any()
        assert no_grad == name.startswith(untrained), name


@pytest.mark.parametrize("sampler, steps, calls", [("ancestral", None, 20), ("ddim", 4, 4)])
def test_sampler_runs_its_steps(toy_config, sampler, steps, calls):
    _, (_, _, _, test_data, model, _) = _build(toy_config, sampler=sampler, sampling_steps=steps)
    batch, _ = _batch_and_guidance(model, test_data)
    seen = []
    original = model.guided_prediction
    model.guided_prediction = lambda *args: seen.append(1) or original(*args)
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
    assert len(seen) == calls and torch.isfinite(scores).all()
    assert scores.shape == (batch["item_id_list"].shape[0], model.n_items)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--guidance_weight=-1"], "guidance_weight=-1 for DreamRec: must be a non-negative number"),
        (["--p_uncond=1.5"], "p_uncond=1.5 for DreamRec: must be a number in [0, 1]"),
        (["--p_uncond=-0.1"], "p_uncond=-0.1 for DreamRec: must be a number in [0, 1]"),
        (["--diffuser_type=mlp3"], "diffuser_type='mlp3' for DreamRec: must be one of mlp1, mlp2."),
    ],
)
def test_bad_input_gives_one_clear_line(monkeypatch, capsys, toy_config, args, message):
    assert_one_clear_line(monkeypatch, capsys, toy_config, "DreamRec", args, message)


def test_mlp2_denoiser_trains(toy_config):
    _, (_, train_data, _, _, model, _) = _build(toy_config, diffuser_type="mlp2")
    assert isinstance(model.denoiser, torch.nn.Sequential) and len(model.denoiser) == 3
    loss = model.calculate_loss(next(iter(train_data)))
    assert torch.isfinite(loss) and loss.requires_grad
