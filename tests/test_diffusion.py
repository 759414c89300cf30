"""The shared diffusion core against its closed forms, on small tensors."""

import math

import pytest
import torch

from recbole_diffusion.diffusion import (
    GaussianDiffusion,
    LossSecondMomentSampler,
    UniformSampler,
    classifier_free_guidance,
    drop_condition,
    get_beta_schedule,
    timestep_embedding,
)
from recbole_diffusion.diffusion.schedules import SCHEDULES


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_schedule_gives_valid_betas(name):
    betas = get_beta_schedule(name, 32)
    assert betas.shape == (32,) and betas.dtype == torch.float64
    assert bool((betas > 0).all()) and bool((betas < 1).all())


def test_trunc_lin_matches_diffurec_endpoints():
    betas = get_beta_schedule("trunc_lin", 32)
    # beta = linspace(0.01 + 1e-4 * 1000/32, 0.01 + 0.02 * 1000/32, 32)
    assert betas[0].item() == pytest.approx(0.013125)
    assert betas[-1].item() == pytest.approx(0.635)
    assert torch.cumprod(1 - betas, 0)[-1].item() < 1e-5  # x_T is essentially pure noise


def test_linear_and_exp_closed_forms():
    lin = get_beta_schedule("linear", 1000)
    assert lin[0].item() == pytest.approx(1e-4) and lin[-1].item() == pytest.approx(0.02)
    T = 500
    exp = get_beta_schedule("exp", T)
    x = torch.linspace(1, 2 * T + 1, T, dtype=torch.float64)
    expected = 1 - torch.exp(-0.1 / T - x * 0.5 * (10 - 0.1) / (T * T))
    assert torch.allclose(exp, expected)
    assert exp[0].item() == pytest.approx(2.2e-4, rel=0.05) and exp[-1].item() == pytest.approx(0.0198, rel=0.02)


def test_cosine_alpha_bar_follows_its_function():
    T = 100
    betas = get_beta_schedule("cosine", T)
    abar = torch.cumprod(1 - betas, 0)
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 10, 50, 90):
        assert abar[t].item() == pytest.approx(f((t + 1) / T) / f(0), rel=1e-6)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="Unknown noise schedule 'trunk_lin'.*trunc_lin"):
        get_beta_schedule("trunk_lin", 32)
    for steps in (0, -3):
        with pytest.raises(ValueError, match="positive integer"):
            get_beta_schedule("linear", steps)


@pytest.fixture
def diffusion():
    return GaussianDiffusion(get_beta_schedule("linear", 50))


def test_alpha_bar_is_cumulative_product(diffusion):
    betas = get_beta_schedule("linear", 50)
    expected = 1.0
    for t in range(50):
        expected *= 1 - betas[t].item()
        assert diffusion.alphas_cumprod[t].item() == pytest.approx(expected, rel=1e-6)


def test_q_sample_closed_form(diffusion):
    x0 = torch.randn(4, 3)
    noise = torch.randn(4, 3)
    t = torch.tensor([0, 3, 6, 9])
    abar = diffusion.alphas_cumprod[t].view(-1, 1)
    assert torch.allclose(diffusion.q_sample(x0, t, noise), abar.sqrt() * x0 + (1 - abar).sqrt() * noise, atol=1e-6)


def test_posterior_is_the_gaussian_product(diffusion):
    """q(x_{t-1}|x_t,x0) ∝ N(x_t; sqrt(a_t) x_{t-1}, b_t) N(x_{t-1}; sqrt(abar_{t-1}) x0, 1 - abar_{t-1})."""
    x0, x_t = torch.randn(3, 2), torch.randn(3, 2)
    t = torch.tensor([1, 4, 9])
    mean, var, _ = diffusion.q_posterior_mean_variance(x0, x_t, t)
    b = diffusion.betas[t].view(-1, 1).double()
    a = 1 - b
    abar_prev = diffusion.alphas_cumprod_prev[t].view(-1, 1).double()
    precision = a / b + 1 / (1 - abar_prev)
    expected_var = 1 / precision
    expected_mean = expected_var * (a.sqrt() * x_t.double() / b + abar_prev.sqrt() * x0.double() / (1 - abar_prev))
    assert torch.allclose(var.double().expand_as(expected_mean), expected_var.expand_as(expected_mean), rtol=1e-4)
    assert torch.allclose(mean.double(), expected_mean, rtol=1e-4, atol=1e-5)


def test_eps_and_x0_conversions_invert(diffusion):
    x0, eps = torch.randn(5, 4), torch.randn(5, 4)
    t = torch.tensor([0, 2, 4, 6, 9])
    x_t = diffusion.q_sample(x0, t, eps)
    assert torch.allclose(diffusion.predict_x0_from_eps(x_t, t, eps), x0, atol=1e-4)
    assert torch.allclose(diffusion.predict_eps_from_x0(x_t, t, x0), eps, atol=1e-3)


def test_ancestral_step_at_zero_returns_prediction_without_noise(diffusion):
    x_t, x0_pred = torch.randn(2, 3), torch.randn(2, 3)
    t = torch.zeros(2, dtype=torch.long)
    assert torch.allclose(diffusion.ancestral_step(x0_pred, x_t, t), x0_pred, atol=1e-6)


def test_ddim_all_steps_eta_one_equals_ancestral_in_distribution(diffusion):
    """Same mean and the posterior (fixed_small) variance: with zero noise the steps agree, and the noise scale
    of DDIM is sqrt(posterior variance)."""
    x0_pred, x_t = torch.randn(6, 3), torch.randn(6, 3)
    t = torch.tensor([1, 2, 3, 5, 7, 9])
    zero = torch.zeros_like(x_t)
    ddim_mean = diffusion.ddim_step(x0_pred, x_t, t, t - 1, eta=1.0, noise=zero)
    ancestral_mean = diffusion.ancestral_step(x0_pred, x_t, t, noise=zero)
    assert torch.allclose(ddim_mean, ancestral_mean, atol=1e-5)
    unit = torch.ones_like(x_t)
    ddim_sigma = diffusion.ddim_step(x0_pred, x_t, t, t - 1, eta=1.0, noise=unit) - ddim_mean
    posterior_std = diffusion.posterior_variance[t].sqrt().view(-1, 1).expand_as(x_t)
    assert torch.allclose(ddim_sigma, posterior_std, atol=1e-5)


def test_ddim_empirical_distribution_matches_ancestral():
    torch.manual_seed(0)
    diffusion = GaussianDiffusion(get_beta_schedule("linear", 60))
    denoise = lambda x_t, t: 0.5 * x_t  # noqa: E731  (any fixed x0 predictor)
    x_T = torch.randn(20000, 1)
    a = diffusion.sample(denoise, x_T, sampler="ancestral")
    d = diffusion.sample(denoise, x_T, sampler="ddim", eta=1.0)
    # ancestral here uses fixed_small variance, so the two chains are the same Markov chain
    assert a.mean().item() == pytest.approx(d.mean().item(), abs=0.03)
    assert a.std().item() == pytest.approx(d.std().item(), rel=0.03)


def test_ddim_skips_steps_and_perfect_denoiser_recovers_x0():
    diffusion = GaussianDiffusion(get_beta_schedule("trunc_lin", 32))
    assert diffusion.sampling_timesteps(4) == [31, 21, 10, 0]
    assert diffusion.sampling_timesteps(None) == list(range(31, -1, -1))
    x0 = torch.randn(3, 5)
    calls = []

    def oracle(x_t, t):
        calls.append(int(t[0]))
        return x0

    out = diffusion.sample(oracle, torch.randn(3, 5), sampler="ddim", sampling_steps=4, eta=0.0)
    assert calls == [31, 21, 10, 0]
    assert torch.allclose(out, x0, atol=1e-5)


def test_epsilon_prediction_round_trip():
    diffusion = GaussianDiffusion(get_beta_schedule("cosine", 20), prediction_type="epsilon")
    x0, eps = torch.randn(4, 3), torch.randn(4, 3)
    t = torch.tensor([0, 5, 10, 19])
    x_t = diffusion.q_sample(x0, t, eps)
    assert torch.allclose(diffusion.x0_from_output(eps, x_t, t), x0, atol=1e-3)


def test_fixed_large_variance_is_diffurecs():
    betas = get_beta_schedule("trunc_lin", 32)
    d = GaussianDiffusion(betas, variance_type="fixed_large")
    expected = torch.cat([d.posterior_variance[1:2].double(), betas[1:]]).log()
    assert torch.allclose(d.model_log_variance.double(), expected, atol=1e-5)


def test_bad_core_arguments():
    with pytest.raises(ValueError, match="prediction_type"):
        GaussianDiffusion(get_beta_schedule("linear", 100), prediction_type="v")
    with pytest.raises(ValueError, match="sampler"):
        GaussianDiffusion(get_beta_schedule("linear", 100)).sample(lambda x, t: x, torch.zeros(1, 1), sampler="euler")
    with pytest.raises(ValueError, match="betas outside"):
        get_beta_schedule("linear", 10)


def test_timestep_embedding_values():
    emb = timestep_embedding(torch.tensor([0.0, 3.0]), 8)
    assert emb.shape == (2, 8)
    assert torch.allclose(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-math.log(10000) * torch.arange(4) / 4)
    assert torch.allclose(emb[1, :4], torch.cos(3 * freqs)) and torch.allclose(emb[1, 4:], torch.sin(3 * freqs))
    assert timestep_embedding(torch.tensor([1.0]), 7).shape == (1, 7)


def test_uniform_sampler_weights_are_one():
    t, w = UniformSampler(10).sample(1000, "cpu", generator=torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() <= 9 and torch.all(w == 1)
    assert len(set(t.tolist())) == 10


def test_loss_aware_sampler_prefers_high_loss_steps():
    sampler = LossSecondMomentSampler(4, history_per_term=3)
    assert not sampler.warmed_up()
    for _ in range(3):
        sampler.update(torch.tensor([0, 1, 2, 3]), torch.tensor([0.1, 0.1, 0.1, 10.0]))
    assert sampler.warmed_up()
    t, w = sampler.sample(4000, "cpu", generator=torch.Generator().manual_seed(0))
    share = (t == 3).float().mean().item()
    assert share > 0.9
    # importance weights undo the bias: E_p[w * L] = mean over t of L_t
    losses = torch.tensor([0.1, 0.1, 0.1, 10.0])
    assert (w * losses[t]).mean().item() == pytest.approx(losses.mean().item(), rel=0.1)


def test_classifier_free_guidance():
    cond, uncond = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.0])
    assert torch.equal(classifier_free_guidance(cond, uncond, 0.0), cond)
    assert torch.allclose(classifier_free_guidance(cond, uncond, 2.0), 3 * cond - 2 * uncond)


def test_drop_condition():
    torch.manual_seed(0)
    cond, null = torch.ones(1000, 4), torch.zeros(4)
    dropped = drop_condition(cond, null, 0.3)
    share = (dropped.sum(-1) == 0).float().mean().item()
    assert share == pytest.approx(0.3, abs=0.05)
    assert torch.equal(drop_condition(cond, null, 0.3, training=False), cond)


def test_noise_std_is_ddpm_on_rescaled_data():
    """noise_std = s on data x is DDPM with unit noise on x / s: every step, forward and reverse, scales by s."""
    s = 0.02
    betas = get_beta_schedule("trunc_lin", 10)
    scaled = GaussianDiffusion(betas, variance_type="fixed_large", noise_std=s)
    unit = GaussianDiffusion(betas, variance_type="fixed_large")
    x0, x_t, eps = torch.randn(5, 4), torch.randn(5, 4), torch.randn(5, 4)
    t = torch.tensor([0, 2, 4, 6, 9])
    assert torch.allclose(scaled.q_sample(s * x0, t, eps), s * unit.q_sample(x0, t, eps), atol=1e-7)
    assert torch.allclose(scaled.predict_x0_from_eps(s * x_t, t, eps), s * unit.predict_x0_from_eps(x_t, t, eps),
                          atol=1e-6)
    assert torch.allclose(scaled.predict_eps_from_x0(s * x_t, t, s * x0), unit.predict_eps_from_x0(x_t, t, x0),
                          atol=1e-4)
    assert torch.allclose(scaled.ancestral_step(s * x0, s * x_t, t, noise=eps),
                          s * unit.ancestral_step(x0, x_t, t, noise=eps), atol=1e-7)
    t_prev = t - 2
    assert torch.allclose(scaled.ddim_step(s * x0, s * x_t, t, t_prev, eta=0.7, noise=eps),
                          s * unit.ddim_step(x0, x_t, t, t_prev, eta=0.7, noise=eps), atol=1e-7)
    torch.manual_seed(0)
    prior = scaled.prior((20000, 4))
    assert prior.std().item() == pytest.approx(s, rel=0.02)
    with pytest.raises(ValueError, match="noise_std must be > 0"):
        GaussianDiffusion(betas, noise_std=0)


def test_models_keep_the_paper_signal_to_noise_ratio_at_init(toy_config):
    """By default the noise follows the item table's init: x_0 ~ N(0, s^2) with noise of std s."""
    from recbole_diffusion.config import Config
    from recbole_diffusion.quick_start import build

    for model, std in (("DiffuRec", 0.02), ("DiffuRec", 1.0), ("DreamRec", 1.0)):
        config = Config(model=model, config_dict=dict(toy_config, embedding_init_std=std))
        net = build(config)[4]
        assert net.diffusion.noise_std == std
        assert net.item_embedding.weight.std().item() == pytest.approx(std, rel=0.1)
    config = Config(model="DiffuRec", config_dict=dict(toy_config, embedding_init_std=0.02, noise_std=0.5))
    assert build(config)[4].diffusion.noise_std == 0.5
