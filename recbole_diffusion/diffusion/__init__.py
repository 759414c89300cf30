"""The one diffusion core of recbole_diffusion (torch only: no RecBole, no Ray, no model)."""

from recbole_diffusion.diffusion.gaussian import GaussianDiffusion, extract
from recbole_diffusion.diffusion.guidance import classifier_free_guidance, drop_condition
from recbole_diffusion.diffusion.schedules import SCHEDULES, get_beta_schedule
from recbole_diffusion.diffusion.spherical import SphericalDiffusion
from recbole_diffusion.diffusion.timesteps import (
    LossSecondMomentSampler,
    UniformSampler,
    create_timestep_sampler,
    timestep_embedding,
)

__all__ = [
    "GaussianDiffusion",
    "SphericalDiffusion",
    "extract",
    "classifier_free_guidance",
    "drop_condition",
    "SCHEDULES",
    "get_beta_schedule",
    "LossSecondMomentSampler",
    "UniformSampler",
    "create_timestep_sampler",
    "timestep_embedding",
]
