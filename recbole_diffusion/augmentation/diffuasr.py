# -*- coding: utf-8 -*-
r"""
DiffuASR
################################################

Reference:
    Qidong Liu, Fan Yan, Xiangyu Zhao, Zhaocheng Du, Huifeng Guo, Ruiming Tang, Feng Tian. "Diffusion Augmentation
    for Sequential Recommendation." CIKM 2023, pp. 1576-1586 (arXiv 2309.12858).

Reference code:
    https://github.com/liuqidong07/DiffuASR (read to understand it; it fails on import; nothing is copied).

DiffuASR is not a recommender: it generates M pseudo items to put *before* the start of a user's sequence, and
any sequential recommender then trains on the longer sequences. The generator is a diffusion model over
x_0 = [e_{v_1}, ..., e_{v_M}] (the embeddings of the first M items of a sequence, [M, d]), guided by the rest of
the sequence, and trained to predict the noise (MSE, linear schedule, T = 1000). At generation the guidance is
the user's training sequence (at most its first ``aug_guidance_length`` items, those the generated items
precede), the reverse chain is a few deterministic DDIM steps of the shared core, and each generated embedding
is rounded to the item of highest cosine similarity (never the padding id 0).

Choices, and where we differ from the official code:
    * Guidance vector: the MEAN of the guidance items' embeddings, as the paper says; the official code SUMS them
      (``pref`` off), so its guidance grows with the sequence length.
    * Item embedding table: learned jointly with the denoiser from N(0, 1), as the official code trains its own
      (``item_emb``). Alone, the noise-prediction loss falls as every embedding shrinks (x_0 then carries less
      to predict): on a toy set the mean item norm fell from 4.1 to 1.1 in 1000 epochs. So we add Diffusion-LM's
      anchor (Li et al. 2022, L_round) with weight ``aug_rounding_weight`` (1 by default): the cross-entropy of
      each target embedding's inner products with the items (``aug_rounding_negatives`` sampled ones), for its
      own item. It kept the norm at 3.3 and doubled the share of generated items that were the true ones
      (properties/model/DiffuASR.yaml gives the figures); 0 is the official training, whose ``--rounding``
      head is never defined.
    * Classifier-free guidance (``aug_guidance: cf``): in training the guidance is replaced by a learned null
      vector with probability ``aug_p_uncond``; at sampling eps = (1 + w) eps(x_t, g) - w eps(x_t, null), the
      core's ``classifier_free_guidance``. The official code runs that combination *in training* too, with no
      condition dropout, so its null vector is never trained to be an unconditional model.
    * Classifier guidance (``aug_guidance: cg``): a small classifier p(y = 1 | x_t, t, g), "the noisy item set
      x_t precedes the sequence whose mean embedding is g", trained alongside the denoiser (same batches; the
      negatives pair x_t with another user's g; inputs detached, so it does not shape the embeddings). At sampling
      only: eps <- eps - sqrt(1 - abar_t) * s * grad_x log p(y = 1 | x_t, t, g) (Dhariwal & Nichol 2021, eq. 14).
      The official code uses a pre-trained Bert4Rec on a masked position and writes
      eps - sqrt(1 - abar[0]) * s * grad BCE: the gradient of the *loss* (the opposite sign: it pushes away
      from the guidance) at abar of step 0 (a factor of about 0.01 instead of sqrt(1 - abar_t)), and it applies
      the correction in training too.
    * Sampling: DDIM with eta = 0 over ``aug_sampling_steps`` evenly spaced steps of the core (5 steps:
      t = 999, 749, 500, 250, 0; the official visits 800, 600, 400, 200, 0).
    * Not reproduced: EMA of the weights (0.9999 in the official scripts, which on a few thousand updates keeps
      the average close to the initial weights).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from recbole_diffusion.augmentation.sunet import NORM_GROUPS, SequentialUNet, unet_resolutions
from recbole_diffusion.diffusion import (
    SCHEDULES,
    GaussianDiffusion,
    classifier_free_guidance,
    drop_condition,
    get_beta_schedule,
)
from recbole_diffusion.model.layers import TimestepMLP
from recbole_diffusion.utils import _bad as bad_hyperparameter
from recbole_diffusion.utils import (
    RecBoleDiffusionError,
    check_choice,
    check_non_negative,
    check_positive,
    check_positive_int,
    check_probability,
)

NAME = "DiffuASR"
GUIDANCE_STRATEGIES = ("cf", "cg")
AUGMENTED_USERS = ("all", "short")
EVAL_HISTORIES = ("original", "augmented")


def _bad(key, value, requirement):
    # the message of every hyperparameter check of the package, pointing at properties/model/DiffuASR.yaml
    return bad_hyperparameter(NAME, key, value, requirement)


def check_config(config):
    """One clear error for a bad DiffuASR key, before any data is loaded."""
    check_positive_int(config, NAME, "aug_num", "aug_hidden_size", "aug_unet_channels", "aug_num_res_blocks",
                       "aug_diffusion_steps", "aug_sampling_steps", "aug_guidance_length", "aug_short_length",
                       "aug_epochs", "aug_batch_size", "aug_stopping_step")
    check_probability(config, NAME, "aug_dropout", "aug_p_uncond", inclusive_one=False)
    check_non_negative(config, NAME, "aug_guidance_scale", "aug_rounding_weight")
    value = config["aug_rounding_negatives"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad("aug_rounding_negatives", value, "must be a non-negative integer (0 = every item)")
    check_positive(config, NAME, "aug_learning_rate")
    check_choice(config, NAME, "aug_guidance", GUIDANCE_STRATEGIES)
    check_choice(config, NAME, "aug_users", AUGMENTED_USERS)
    check_choice(config, NAME, "aug_eval_histories", EVAL_HISTORIES)
    check_choice(config, NAME, "aug_noise_schedule", list(SCHEDULES))
    seed = config["aug_seed"]
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _bad("aug_seed", seed, "must be an integer, or ~ for the run's seed")
    d = config["aug_hidden_size"]
    side = math.isqrt(d)
    if side * side != d:
        raise _bad("aug_hidden_size", d, "must be a perfect square: the SU-Net reshapes each item embedding to "
                                         "sqrt(d) x sqrt(d), e.g. 64 = 8 x 8 (the paper's) or 16 = 4 x 4")
    if config["aug_unet_channels"] % NORM_GROUPS:
        raise _bad("aug_unet_channels", config["aug_unet_channels"],
                   f"must be a multiple of {NORM_GROUPS} (GroupNorm with {NORM_GROUPS} groups)")
    mult = config["aug_channel_mult"]
    if not isinstance(mult, (list, tuple)) or not mult or not all(
            isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in mult):
        raise _bad("aug_channel_mult", mult, "must be a non-empty list of positive integers, e.g. [1, 2, 2, 2]")
    if unet_resolutions(side, len(mult))[-1] < 1:
        raise _bad("aug_channel_mult", mult, f"has {len(mult)} levels, but a {side} x {side} embedding image halves "
                                             f"to 1 x 1 after {side.bit_length() - 1} downsamplings: use at most "
                                             f"{side.bit_length()} levels or a larger aug_hidden_size")
    try:  # a schedule invalid for this T (linear with few steps) fails here, before any data is loaded
        get_beta_schedule(config["aug_noise_schedule"], config["aug_diffusion_steps"])
    except ValueError as err:
        raise RecBoleDiffusionError(f"{NAME}: {err} Fix it with --aug_diffusion_steps/--aug_noise_schedule.") from err
    if config["aug_sampling_steps"] > config["aug_diffusion_steps"]:
        raise _bad("aug_sampling_steps", config["aug_sampling_steps"],
                   f"must be at most aug_diffusion_steps={config['aug_diffusion_steps']}")


class GuidanceClassifier(nn.Module):
    r"""The classifier of classifier guidance: logit of p(y = 1 | x_t, t, g), "the (noisy) item embeddings x_t
    precede the sequence whose mean embedding is g". An MLP reads x_t and the step embedding into a d-vector h;
    the logit is <h, g> / sqrt(d)."""

    def __init__(self, num_items, hidden_size):
        super().__init__()
        self.time_embedding = TimestepMLP(hidden_size)
        self.encoder = nn.Sequential(
            nn.Linear(num_items * hidden_size + hidden_size, 2 * hidden_size), nn.SiLU(),
            nn.Linear(2 * hidden_size, hidden_size),
        )
        self.scale = hidden_size ** -0.5

    def forward(self, x_t, timesteps, guidance):
        """x_t [B, M, d], timesteps [B] (the values to embed), guidance [B, d] -> logits [B]."""
        h = self.encoder(torch.cat([x_t.flatten(1), self.time_embedding(timesteps)], dim=-1))
        return (h * guidance).sum(-1) * self.scale


class DiffuASR(nn.Module):
    r"""The DiffuASR generator: item embeddings, the SU-Net denoiser, and the guidance of the chosen strategy.

    Args:
        config: a configuration holding the ``aug_*`` keys of ``properties/model/DiffuASR.yaml``.
        n_items (int): size of the item table, padding id 0 included.
    """

    def __init__(self, config, n_items):
        super().__init__()
        check_config(config)

        # load parameters info
        self.aug_num = config["aug_num"]
        self.aug_hidden_size = config["aug_hidden_size"]
        self.aug_guidance = config["aug_guidance"]
        self.aug_guidance_scale = config["aug_guidance_scale"]
        self.aug_p_uncond = config["aug_p_uncond"]
        self.aug_sampling_steps = config["aug_sampling_steps"]
        self.aug_rounding_weight = config["aug_rounding_weight"]
        self.aug_rounding_negatives = config["aug_rounding_negatives"]
        self.n_items = n_items

        # define layers and loss
        self.item_embedding = nn.Embedding(n_items, self.aug_hidden_size, padding_idx=0)  # N(0, 1), as official
        self.diffusion = GaussianDiffusion.from_config(
            config["aug_noise_schedule"], config["aug_diffusion_steps"], prediction_type="epsilon"
        )
        self.denoiser = SequentialUNet(
            self.aug_num, self.aug_hidden_size, channels=config["aug_unet_channels"],
            channel_mult=list(config["aug_channel_mult"]), num_res_blocks=config["aug_num_res_blocks"],
            dropout=config["aug_dropout"],
        )
        if self.aug_guidance == "cf":
            # the learned null guidance of classifier-free guidance
            self.null_guidance = nn.Parameter(torch.randn(self.aug_hidden_size))
        else:
            self.classifier = GuidanceClassifier(self.aug_num, self.aug_hidden_size)

    def guidance_vector(self, guidance_items):
        """Mean embedding of each row's non-padding items: guidance_items [B, K] (0 = padding) -> [B, d]."""
        mask = (guidance_items > 0).unsqueeze(-1).float()
        return (self.item_embedding(guidance_items) * mask).sum(1) / mask.sum(1).clamp(min=1)

    def noise_prediction(self, x_t, t, guidance):
        """epsilon_theta(x_t, t, g): x_t [B, M, d], t [B] raw steps, guidance [B, d] -> [B, M, d]."""
        return self.denoiser(x_t, self.diffusion.scale_timesteps(t), guidance)

    def classifier_log_prob(self, x_t, t, guidance):
        """log p(y = 1 | x_t, t, g) [B]."""
        return F.logsigmoid(self.classifier(x_t, self.diffusion.scale_timesteps(t), guidance))

    def calculate_loss(self, prefix_items, guidance_items):
        """Training loss for a batch: prefix_items [B, M] (the first M items), guidance_items [B, K] (the rest)."""
        x0 = self.item_embedding(prefix_items)
        guidance = self.guidance_vector(guidance_items)
        B, T = x0.shape[0], self.diffusion.num_timesteps
        # antithetic steps, as the official code: t for half the batch, T - 1 - t for the other half
        half = torch.randint(0, T, ((B + 1) // 2,), device=x0.device)
        t = torch.cat([half, T - 1 - half])[:B]
        noise = torch.randn_like(x0)
        x_t = self.diffusion.q_sample(x0, t, noise)
        if self.aug_guidance == "cf":
            guidance_in = drop_condition(guidance, self.null_guidance, self.aug_p_uncond, self.training)
        else:
            guidance_in = guidance
        loss = F.mse_loss(self.noise_prediction(x_t, t, guidance_in), noise)
        if self.aug_rounding_weight > 0:
            loss = loss + self.aug_rounding_weight * self.rounding_loss(x0, prefix_items)
        if self.aug_guidance == "cg":
            loss = loss + self.classifier_loss(x_t.detach(), t, guidance.detach())
        return loss

    def rounding_loss(self, x0, items):
        """Diffusion-LM's L_round as an anchor of the item table: -log softmax_j <e_v, e_j> at j = v, for each
        target item v [B, M] with embedding e_v (x0 [B, M, d]). Over every item, or over the item itself and
        ``aug_rounding_negatives`` items drawn uniformly (a draw of v itself is masked); never the padding id."""
        x, target = x0.reshape(-1, x0.shape[-1]), items.reshape(-1)
        table = self.item_embedding.weight
        k = self.aug_rounding_negatives
        if k == 0 or k >= self.n_items - 1:
            return F.cross_entropy(x @ table[1:].t(), target - 1)
        negatives = torch.randint(1, self.n_items, (k,), device=x.device)
        negative_logits = (x @ table[negatives].t()).masked_fill(negatives[None] == target[:, None], float("-inf"))
        logits = torch.cat([(x * table[target]).sum(-1, keepdim=True), negative_logits], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(target))

    def classifier_loss(self, x_t, t, guidance):
        """BCE of the guidance classifier: (x_t, own g) is positive, (x_t, another row's g) negative."""
        positive = self.classifier(x_t, self.diffusion.scale_timesteps(t), guidance)
        loss = F.binary_cross_entropy_with_logits(positive, torch.ones_like(positive))
        if x_t.shape[0] > 1:
            negative = self.classifier(x_t, self.diffusion.scale_timesteps(t), guidance.roll(1, dims=0))
            loss = loss + F.binary_cross_entropy_with_logits(negative, torch.zeros_like(negative))
        return loss

    def guided_noise(self, x_t, t, guidance):
        """The noise estimate each reverse step uses, with the configured guidance; [B, M, d]."""
        if self.aug_guidance == "cf":
            null = self.null_guidance.expand_as(guidance)
            cond, uncond = self.noise_prediction(
                torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([guidance, null])
            ).chunk(2)
            return classifier_free_guidance(cond, uncond, self.aug_guidance_scale)
        eps = self.noise_prediction(x_t, t, guidance)
        if self.aug_guidance_scale == 0:
            return eps
        with torch.enable_grad():
            x_in = x_t.detach().requires_grad_(True)
            grad = torch.autograd.grad(self.classifier_log_prob(x_in, t, guidance).sum(), x_in)[0]
        # Dhariwal & Nichol eq. 14: eps^ = eps - sqrt(1 - abar_t) * s * grad_x log p(y | x_t)
        sigma = self.diffusion.sqrt_one_minus_alphas_cumprod.gather(0, t).view(-1, 1, 1)
        return eps - sigma * self.aug_guidance_scale * grad

    @torch.no_grad()
    def generate(self, guidance_items, x_T):
        """Generated item ids [B, M] (never 0) from noise x_T [B, M, d], guided by guidance_items [B, K]."""
        guidance = self.guidance_vector(guidance_items)
        x0 = self.diffusion.sample(
            lambda x_t, t: self.guided_noise(x_t, t, guidance), x_T, sampler="ddim",
            sampling_steps=self.aug_sampling_steps, eta=0.0,
        )
        return self.round_to_items(x0)

    def round_to_items(self, x0):
        """Rounding: each embedding [B, M, d] -> the id of the item of highest cosine similarity [B, M], 1..n-1."""
        items = F.normalize(self.item_embedding.weight[1:], dim=-1)
        return (F.normalize(x0, dim=-1) @ items.t()).argmax(-1) + 1
