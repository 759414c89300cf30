"""Gaussian diffusion: forward noising, posterior, and the reverse samplers every model shares.

The network is not part of this object (as in diffusers' schedulers): a model holds one ``GaussianDiffusion``
built from its yaml and hands it predictions. Equation numbers refer to Ho et al. 2020 (DDPM) and
Song et al. 2021 (DDIM).
"""

import torch
from torch import nn

from recbole_diffusion.diffusion.schedules import get_beta_schedule

PREDICTION_TYPES = ("x0", "epsilon")
VARIANCE_TYPES = ("fixed_small", "fixed_large")
SAMPLERS = ("ancestral", "ddim")


def extract(a, t, shape):
    """Gather ``a[t]`` for a batch of timesteps ``t`` [B] and reshape to broadcast against ``shape`` [B, ...]."""
    out = a.gather(0, t)
    return out.view(t.shape[0], *([1] * (len(shape) - 1)))


class GaussianDiffusion(nn.Module):
    r"""DDPM/DDIM arithmetic on a fixed beta schedule.

    Args:
        betas (torch.Tensor): [T] betas, e.g. from :func:`get_beta_schedule`.
        prediction_type (str): what the network predicts, ``'x0'`` or ``'epsilon'``.
        variance_type (str): reverse-step variance, ``'fixed_small'`` (posterior variance, DDPM sigma^2 = beta~)
            or ``'fixed_large'`` (sigma^2 = beta_t, first step beta~_1, as DiffuRec and improved-DDPM do).
        rescale_timesteps (bool): if True, :meth:`scale_timesteps` maps t to t * 1000 / T for embeddings.
        noise_std (float): standard deviation of the noise per coordinate (1 in DDPM). Diffusing data x with
            noise of std s is DDPM on x / s: the signal-to-noise ratio of step t is abar_t / (1 - abar_t) times
            Var(x) / s^2, so data of scale s keeps DDPM's ratios with ``noise_std = s``. Every noise draw (forward,
            reverse, x_T of :meth:`prior`) is scaled by it; ``eps`` (argument or prediction) stays unit-variance.
    """

    def __init__(self, betas, prediction_type="x0", variance_type="fixed_small", rescale_timesteps=False,
                 noise_std=1.0):
        super().__init__()
        if not noise_std > 0:
            raise ValueError(f"noise_std must be > 0, got {noise_std!r}.")
        self.noise_std = float(noise_std)
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}.")
        if variance_type not in VARIANCE_TYPES:
            raise ValueError(f"variance_type must be one of {VARIANCE_TYPES}, got {variance_type!r}.")
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1 or not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must be a 1-D tensor with every value in (0, 1].")
        self.num_timesteps = betas.shape[0]
        self.prediction_type = prediction_type
        self.variance_type = variance_type
        self.rescale_timesteps = rescale_timesteps

        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, 0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        # q(x_{t-1} | x_t, x_0), eq. (6)-(7)
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        posterior_mean_coef1 = betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod)
        posterior_mean_coef2 = (1.0 - alphas_cumprod_prev) * alphas.sqrt() / (1.0 - alphas_cumprod)
        # posterior_variance[0] is 0: log-variances start from step 1's value, as in improved DDPM.
        first = posterior_variance[1:2] if self.num_timesteps > 1 else betas[:1]
        if variance_type == "fixed_small":
            model_variance = torch.cat([first, posterior_variance[1:]])
        else:
            model_variance = torch.cat([first, betas[1:]])

        buffers = {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
            "sqrt_recip_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_mean_coef1": posterior_mean_coef1,
            "posterior_mean_coef2": posterior_mean_coef2,
            "model_log_variance": model_variance.log(),
        }
        # Computed in float64, stored in float32; recomputed from the schedule, so never saved in checkpoints.
        for name, value in buffers.items():
            self.register_buffer(name, value.float(), persistent=False)

    @classmethod
    def from_config(cls, noise_schedule, diffusion_steps, **kwargs):
        """Build from a schedule name, e.g. ``GaussianDiffusion.from_config('trunc_lin', 32)``."""
        schedule_kwargs = kwargs.pop("schedule_kwargs", None) or {}
        return cls(get_beta_schedule(noise_schedule, diffusion_steps, **schedule_kwargs), **kwargs)

    def scale_timesteps(self, t):
        """The timestep value a network embeds: t, or t * 1000 / T when ``rescale_timesteps``."""
        if self.rescale_timesteps:
            return t.float() * (1000.0 / self.num_timesteps)
        return t.float()

    # ----------------------------------------------------------------------------------------------- forward
    def prior(self, shape, device=None, generator=None):
        """x_T ~ N(0, noise_std^2 I), the start of the reverse chain."""
        return self.noise_std * torch.randn(shape, device=device, generator=generator)

    def q_sample(self, x0, t, noise=None):
        """Sample x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) noise_std^2 I), eq. (4). Shapes [B, ...];
        ``noise`` is the unit-variance eps."""
        if noise is None:
            noise = torch.randn_like(x0)
        return (
            extract(self.sqrt_alphas_cumprod, t, x0.shape) * x0
            + extract(self.sqrt_one_minus_alphas_cumprod, t, x0.shape) * self.noise_std * noise
        )

    def q_posterior_mean_variance(self, x0, x_t, t):
        """Mean, variance and log-variance of q(x_{t-1} | x_t, x_0), eq. (6)-(7)."""
        mean = extract(self.posterior_mean_coef1, t, x_t.shape) * x0 + extract(
            self.posterior_mean_coef2, t, x_t.shape
        ) * x_t
        variance = extract(self.posterior_variance, t, x_t.shape)
        return mean, variance, extract(self.model_log_variance, t, x_t.shape)

    def predict_x0_from_eps(self, x_t, t, eps):
        # x_0 = (x_t - sqrt(1 - abar_t) s eps) / sqrt(abar_t), s = noise_std
        return extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t.shape
        ) * self.noise_std * eps

    def predict_eps_from_x0(self, x_t, t, x0):
        """The unit-variance eps that takes x_0 to x_t."""
        return (extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - x0) / (extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t.shape
        ) * self.noise_std)

    def x0_from_output(self, model_output, x_t, t):
        """The network's prediction as x_0, whatever ``prediction_type`` it was trained for."""
        if self.prediction_type == "x0":
            return model_output
        return self.predict_x0_from_eps(x_t, t, model_output)

    # ----------------------------------------------------------------------------------------------- reverse
    def p_mean_variance(self, model_output, x_t, t):
        """Mean and log-variance of p(x_{t-1} | x_t): the posterior at the predicted x_0. Returns (mean, log_var, x0)."""
        x0_pred = self.x0_from_output(model_output, x_t, t)
        mean, _, log_variance = self.q_posterior_mean_variance(x0_pred, x_t, t)
        return mean, log_variance, x0_pred

    def ancestral_step(self, model_output, x_t, t, noise=None):
        """One DDPM step x_t -> x_{t-1} (Algorithm 2); no noise is added at t = 0."""
        mean, log_variance, _ = self.p_mean_variance(model_output, x_t, t)
        if noise is None:
            noise = torch.randn_like(x_t)
        nonzero = (t != 0).float().view(-1, *([1] * (x_t.dim() - 1)))
        return mean + nonzero * (0.5 * log_variance).exp() * self.noise_std * noise

    def ddim_step(self, model_output, x_t, t, t_prev, eta=0.0, noise=None):
        """One DDIM step x_t -> x_{t_prev} (Song et al. eq. 12); ``t_prev`` may skip steps, -1 means x_0.

        With eta = 1 and t_prev = t - 1 its variance is the posterior variance, so the step equals the
        ancestral 'fixed_small' step in distribution; eta = 0 is deterministic.
        """
        x0_pred = self.x0_from_output(model_output, x_t, t)
        eps = self.predict_eps_from_x0(x_t, t, x0_pred)
        abar_t = extract(self.alphas_cumprod, t, x_t.shape)
        abar_prev = torch.where(
            t_prev >= 0, self.alphas_cumprod.gather(0, t_prev.clamp(min=0)), torch.ones_like(abar_t.view(-1))
        ).view_as(abar_t)
        sigma = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).clamp(min=0).sqrt()
        direction = (1 - abar_prev - sigma**2).clamp(min=0).sqrt() * self.noise_std * eps
        if noise is None:
            noise = torch.randn_like(x_t)
        return abar_prev.sqrt() * x0_pred + direction + sigma * self.noise_std * noise

    def sampling_timesteps(self, sampling_steps=None):
        """Descending timesteps visited by the reverse chain: all T, or ``sampling_steps`` evenly spaced ones."""
        T = self.num_timesteps
        if sampling_steps is None or sampling_steps >= T:
            return list(range(T - 1, -1, -1))
        if sampling_steps < 1:
            raise ValueError(f"sampling_steps must be a positive integer, got {sampling_steps!r}.")
        steps = torch.linspace(T - 1, 0, sampling_steps, dtype=torch.float64).round().long().tolist()
        return sorted(set(steps), reverse=True)

    @torch.no_grad()
    def sample(self, denoise_fn, x_T, sampler="ancestral", sampling_steps=None, eta=0.0):
        """Run the reverse chain from ``x_T`` [B, ...] and return the final x_0 estimate.

        Args:
            denoise_fn: callable ``(x_t, t) -> model_output`` with ``t`` a LongTensor [B] of raw step indices.
            sampler (str): ``'ancestral'`` (DDPM, every step) or ``'ddim'`` (may skip steps).
            sampling_steps (int): number of reverse steps for DDIM; None means all T.
            eta (float): DDIM stochasticity, 0 deterministic, 1 DDPM-like.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}.")
        timesteps = self.sampling_timesteps(sampling_steps if sampler == "ddim" else None)
        x_t = x_T
        batch = x_T.shape[0]
        for i, step in enumerate(timesteps):
            t = torch.full((batch,), step, device=x_T.device, dtype=torch.long)
            output = denoise_fn(x_t, t)
            if sampler == "ancestral":
                x_t = self.ancestral_step(output, x_t, t)
            else:
                prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
                x_t = self.ddim_step(output, x_t, t, torch.full_like(t, prev), eta=eta)
        return x_t
