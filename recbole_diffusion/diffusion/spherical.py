"""Diffusion on the unit hypersphere (DimeRec): the Gaussian equations, every point projected back onto the sphere."""

import torch.nn.functional as F

from recbole_diffusion.diffusion.gaussian import GaussianDiffusion


class SphericalDiffusion(GaussianDiffusion):
    r"""The shared Gaussian diffusion with every point it produces projected onto the unit hypersphere.

    x_t = L2Norm(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps) in training (Algorithm 1, line 10), each reverse step
    L2Norm(x_{t-1}) (Algorithm 2, line 6), x_T = L2Norm(x_T). Between projections DDPM's and DDIM's equations are
    used unchanged: small isotropic steps on the sphere are close to Gaussian in its tangent space. ``noise_std``
    (the base class's) is the standard deviation of the noise per coordinate.
    """

    def q_sample(self, x0, t, noise=None):
        return F.normalize(super().q_sample(x0, t, noise), dim=-1)

    def ancestral_step(self, model_output, x_t, t, noise=None):
        return F.normalize(super().ancestral_step(model_output, x_t, t, noise), dim=-1)

    def ddim_step(self, model_output, x_t, t, t_prev, eta=0.0, noise=None):
        return F.normalize(super().ddim_step(model_output, x_t, t, t_prev, eta, noise), dim=-1)

    def sample(self, denoise_fn, x_T, **kwargs):
        return super().sample(denoise_fn, F.normalize(x_T, dim=-1), **kwargs)
