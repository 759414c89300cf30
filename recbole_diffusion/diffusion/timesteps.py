"""Timestep samplers for training and the sinusoidal timestep embedding."""

import math

import torch


def timestep_embedding(timesteps, dim, max_period=10000):
    """Sinusoidal embedding [cos, sin] of (possibly fractional) timesteps [B] -> [B, dim] (DDPM / DiffuSeq)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    args = timesteps.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class UniformSampler:
    """t ~ Uniform{0, ..., T-1}; every importance weight is 1."""

    def __init__(self, num_timesteps):
        self.num_timesteps = num_timesteps

    def weights(self):
        return torch.ones(self.num_timesteps, dtype=torch.float64)

    def sample(self, batch_size, device, generator=None):
        """Return timesteps [B] (long) and importance weights [B] (float) that make the loss unbiased."""
        w = self.weights()
        p = w / w.sum()
        t = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        weights = 1.0 / (self.num_timesteps * p[t])
        return t.to(device), weights.float().to(device)

    def update(self, t, losses):
        """Record per-sample losses (no-op for the uniform sampler)."""


class LossSecondMomentSampler(UniformSampler):
    """Importance sampling of t by the root mean square of its recent losses (Nichol & Dhariwal 2021, sec. 3.3).

    Uniform until each timestep has ``history_per_term`` losses; then p_t ~ sqrt(E[L_t^2]), mixed with
    ``uniform_prob`` of the uniform distribution.
    """

    def __init__(self, num_timesteps, history_per_term=10, uniform_prob=0.001):
        super().__init__(num_timesteps)
        self.history_per_term = history_per_term
        self.uniform_prob = uniform_prob
        self.loss_history = torch.zeros(num_timesteps, history_per_term, dtype=torch.float64)
        self.loss_counts = torch.zeros(num_timesteps, dtype=torch.long)

    def warmed_up(self):
        return bool((self.loss_counts == self.history_per_term).all())

    def weights(self):
        if not self.warmed_up():
            return torch.ones(self.num_timesteps, dtype=torch.float64)
        w = (self.loss_history**2).mean(dim=-1).sqrt()
        w = w / w.sum()
        return w * (1 - self.uniform_prob) + self.uniform_prob / self.num_timesteps

    def update(self, t, losses):
        for step, loss in zip(t.tolist(), losses.detach().double().cpu().tolist()):
            count = int(self.loss_counts[step])
            if count == self.history_per_term:
                self.loss_history[step, :-1] = self.loss_history[step, 1:].clone()
                self.loss_history[step, -1] = loss
            else:
                self.loss_history[step, count] = loss
                self.loss_counts[step] += 1


TIMESTEP_SAMPLERS = {"uniform": UniformSampler, "lossaware": LossSecondMomentSampler}


def create_timestep_sampler(name, num_timesteps):
    if name not in TIMESTEP_SAMPLERS:
        raise ValueError(f"Unknown schedule_sampler '{name}'. Use one of: {', '.join(TIMESTEP_SAMPLERS)}.")
    return TIMESTEP_SAMPLERS[name](num_timesteps)
