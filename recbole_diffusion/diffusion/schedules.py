"""Beta schedules by name.

The set is DiffuRec's ``get_named_beta_schedule`` (linear, cosine, sqrt, trunc_lin, trunc_cos, pw_lin) plus
DreamRec's ``exp`` and DiffRec's ``linear_var`` (also DDRM's). Each function returns a float64 tensor of ``steps``
betas in (0, 1).
"""

import math

import torch


def betas_for_alpha_bar(steps, alpha_bar, max_beta=0.999, shift_left=False):
    """Discretize a continuous alpha_bar(t), t in [0, 1], into betas (Nichol & Dhariwal 2021, eq. 17).

    ``shift_left`` is DiffuSeq's variant used by ``trunc_cos``: the first beta is 1 - alpha_bar(0) and the
    remaining ``steps - 1`` betas are the ratios over [0, (steps - 1) / steps].
    """
    betas = [min(1.0 - alpha_bar(0.0), max_beta)] if shift_left else []
    for i in range(steps - len(betas)):
        t1, t2 = i / steps, (i + 1) / steps
        betas.append(min(1.0 - alpha_bar(t2) / alpha_bar(t1), max_beta))
    return torch.tensor(betas, dtype=torch.float64)


def _linear(steps, beta_start=1e-4, beta_end=0.02, linear_rescale=True, **_):
    # Ho et al. (2020) betas. With linear_rescale (DiffuRec's get_named_beta_schedule) they are multiplied by
    # 1000 / T, so that any number of steps spans the same noise range as 1000 steps; without it (DreamRec's
    # linear_beta_schedule) they are linspace(beta_start, beta_end, T) whatever T.
    scale = 1000.0 / steps if linear_rescale else 1.0
    return torch.linspace(scale * beta_start, scale * beta_end, steps, dtype=torch.float64)


def _cosine(steps, cosine_clip=(0.0, 0.999), **_):
    # Nichol & Dhariwal (2021), s = 0.008, each beta clipped to cosine_clip: (0, 0.999) as improved DDPM and
    # DiffuRec; DreamRec's cosine_beta_schedule clips to (1e-4, 0.9999).
    low, high = cosine_clip
    betas = betas_for_alpha_bar(steps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2, max_beta=high)
    return betas.clamp(min=low)


def _sqrt(steps, **_):
    return betas_for_alpha_bar(steps, lambda t: 1 - math.sqrt(t + 0.0001))


def _trunc_lin(steps, **_):
    # DiffuRec's default: the linear schedule shifted up by 0.01, falling back to a gentler end if beta > 1.
    scale = 1000.0 / steps
    beta_start, beta_end = scale * 0.0001 + 0.01, scale * 0.02 + 0.01
    if beta_end > 1:
        beta_end = scale * 0.001 + 0.01
    return torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)


def _trunc_cos(steps, **_):
    return betas_for_alpha_bar(steps, lambda t: math.cos((t + 0.1) / 1.1 * math.pi / 2) ** 2, shift_left=True)


def _pw_lin(steps, **_):
    # Piecewise linear: 10 steps falling from 0.01 + 1e-4 s to 1e-4 s, then linear up to 0.02 s (s = 1000 / T).
    scale = 1000.0 / steps
    head = torch.linspace(scale * 0.0001 + 0.01, scale * 0.0001, 10, dtype=torch.float64)
    tail = torch.linspace(scale * 0.0001, scale * 0.02, steps - 10, dtype=torch.float64)
    return torch.cat([head, tail])[:steps]


def _exp(steps, beta_min=0.1, beta_max=10.0, **_):
    # DreamRec: beta_t = 1 - exp(-beta_min / T - x_t (beta_max - beta_min) / (2 T^2)), x = linspace(1, 2T + 1, T).
    x = torch.linspace(1, 2 * steps + 1, steps, dtype=torch.float64)
    return 1 - torch.exp(-beta_min / steps - x * 0.5 * (beta_max - beta_min) / (steps * steps))


def _linear_var(steps, noise_scale=0.005, noise_min=0.005, noise_max=0.01, beta_fixed=True, max_beta=0.999, **_):
    # DiffRec (Wang et al. 2023) 'linear-var': the variance 1 - abar_t runs linearly from noise_scale * noise_min
    # to noise_scale * noise_max; beta_t = 1 - abar_t / abar_{t-1}. beta_fixed pins beta_1 to 1e-5 afterwards
    # (Sohl-Dickstein et al. 2015, sec. 2.4.1), as the official DiffRec and DDRM code do.
    variance = torch.linspace(noise_scale * noise_min, noise_scale * noise_max, steps, dtype=torch.float64)
    alpha_bar = 1.0 - variance
    betas = torch.cat([variance[:1], (1.0 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)])
    if beta_fixed:
        betas[0] = 1e-5
    return betas


SCHEDULES = {
    "linear": _linear,
    "cosine": _cosine,
    "sqrt": _sqrt,
    "trunc_lin": _trunc_lin,
    "trunc_cos": _trunc_cos,
    "pw_lin": _pw_lin,
    "exp": _exp,
    "linear_var": _linear_var,
}


def get_beta_schedule(name, steps, **kwargs):
    """Return the betas of the schedule ``name`` for ``steps`` diffusion steps, shape ``[steps]``, float64."""
    if name not in SCHEDULES:
        raise ValueError(
            f"Unknown noise schedule '{name}'. Set noise_schedule to one of: {', '.join(SCHEDULES)}."
        )
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"diffusion_steps must be a positive integer, got {steps!r}.")
    if name == "pw_lin" and steps < 11:
        raise ValueError(f"noise_schedule 'pw_lin' needs diffusion_steps >= 11, got {steps}.")
    betas = SCHEDULES[name](steps, **kwargs)
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError(
            f"noise_schedule '{name}' with diffusion_steps={steps} gives betas outside (0, 1) "
            f"(max {betas.max().item():.3g}); use more diffusion_steps or another schedule."
        )
    return betas
