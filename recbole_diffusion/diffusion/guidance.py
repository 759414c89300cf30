"""Classifier-free guidance (Ho & Salimans 2022), as DreamRec and DiffuASR use it."""

import torch


def drop_condition(condition, null_condition, p_uncond, training=True):
    """Replace each row of ``condition`` [B, ...] by ``null_condition`` [...] with probability ``p_uncond``."""
    if not training or p_uncond <= 0:
        return condition
    keep = torch.rand(condition.shape[0], device=condition.device) >= p_uncond
    keep = keep.view(-1, *([1] * (condition.dim() - 1)))
    return torch.where(keep, condition, null_condition.expand_as(condition))


def classifier_free_guidance(cond_output, uncond_output, guidance_weight):
    """(1 + w) f(x_t, c, t) - w f(x_t, null, t); w = 0 gives the conditional prediction."""
    if guidance_weight == 0:
        return cond_output
    return (1 + guidance_weight) * cond_output - guidance_weight * uncond_output
