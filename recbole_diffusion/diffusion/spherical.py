"""Diffusion on the unit hypersphere (DimeRec): the Gaussian equations, every point projected back onto the sphere."""

import torch
import torch.nn.functional as F

from recbole_diffusion.diffusion.gaussian import GaussianDiffusion


class SphericalDiffusion(GaussianDiffusion):
    r"""The shared Gaussian diffusion with every point it produces projected onto the unit hypersphere.

    x_t = L2Norm(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps) in training (Algorithm 1, line 10), each reverse step
    L2Norm(x_{t-1}) (Algorithm 2, line 6), x_T = L2Norm(x_T). Between projections DDPM's and DDIM's equations are
    used unchanged: small isotropic steps on the sphere are close to Gaussian in its tangent space. ``noise_std``
    is the standard deviation of eps per coordinate.
    """

    def __init__(self, betas, noise_std, **kwargs):
        super().__init__(betas, **kwargs)
        self.noise_std = noise_std

    def _noise(self, x, noise):
        return self.noise_std * torch.randn_like(x) if noise is None else noise

    def q_sample(self, x0, t, noise=None):
        return F.normalize(super().q_sample(x0, t, self._noise(x0, noise)), dim=-1)

    def ancestral_step(self, model_output, x_t, t, noise=None):
        return F.normalize(super().ancestral_step(model_output, x_t, t, self._noise(x_t, noise)), dim=-1)

    def ddim_step(self, model_output, x_t, t, t_prev, eta=0.0, noise=None):
        return F.normalize(super().ddim_step(model_output, x_t, t, t_prev, eta, self._noise(x_t, noise)), dim=-1)

    def sample(self, denoise_fn, x_T, **kwargs):
        return super().sample(denoise_fn, F.normalize(x_T, dim=-1), **kwargs)
