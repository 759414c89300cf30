# -*- coding: utf-8 -*-
r"""
DiffuRec
################################################

Reference:
    Zihao Li, Aixin Sun, Chenliang Li. "DiffuRec: A Diffusion Model for Sequential Recommendation."
    ACM TOIS 42(3), article 66, 2024 (arXiv 2304.00686).

Reference code:
    https://github.com/WHUIR/DiffuRec (read to understand it; nothing here is copied from it).

Only the target item's embedding is diffused. The approximator sees the history as
z_i = e_i + lambda_i * (x_t + d_t), lambda ~ N(delta, delta) element-wise, runs a Transformer over it and predicts
x_0 at the last real position; training is a cross-entropy of x0_pred against every item embedding. Inference
runs the reverse chain from Gaussian noise and ranks items by inner product with the result.

Differences from the official code, all documented in ``properties/model/DiffuRec.yaml``:
    * RecBole pads on the right. By default attention masks padding keys (``attention_mask: key_padding``),
      which makes trimming a batch to its longest sequence exact. The official code attends to padding keys
      and flattens padding query rows (``attention_mask: official`` reproduces it; with no position embedding the
      side of the padding does not matter, so this matches left padding too, and batches are then not trimmed).
    * Few-step inference with DDIM (``sampler: ddim``) is offered beside the paper's 32-step ancestral chain.
"""

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType
from torch import nn

from recbole_diffusion.diffusion import GaussianDiffusion, SCHEDULES, create_timestep_sampler
from recbole_diffusion.diffusion.gaussian import SAMPLERS
from recbole_diffusion.diffusion.timesteps import TIMESTEP_SAMPLERS
from recbole_diffusion.model.layers import ATTENTION_MASKS, TimestepMLP, TransformerEncoder
from recbole_diffusion.utils import (
    RecBoleDiffusionError,
    check_choice,
    check_divisible,
    check_non_negative,
    check_positive_int,
    check_probability,
)


class DiffuRec(SequentialRecommender):
    r"""DiffuRec: the target item embedding is diffused, a Transformer over the history recovers it."""

    input_type = InputType.POINTWISE

    @classmethod
    def check_config(cls, config):
        """Validate every hyperparameter before any data is loaded; one clear error each."""
        name = cls.__name__
        check_positive_int(config, name, "hidden_size", "inner_size", "n_layers", "n_heads", "diffusion_steps",
                           "MAX_ITEM_LIST_LENGTH")
        check_divisible(config, name, "hidden_size", "n_heads")
        check_probability(config, name, "hidden_dropout_prob", "attn_dropout_prob", "emb_dropout",
                          inclusive_one=False)
        check_non_negative(config, name, "lambda_uncertainty", "ddim_eta")
        check_choice(config, name, "noise_schedule", list(SCHEDULES))
        check_choice(config, name, "schedule_sampler", list(TIMESTEP_SAMPLERS))
        check_choice(config, name, "sampler", list(SAMPLERS))
        check_choice(config, name, "attention_mask", list(ATTENTION_MASKS))
        if config["sampling_steps"] is not None:
            check_positive_int(config, name, "sampling_steps")
        neg = config["train_neg_sample_args"]
        if neg and neg.get("distribution", "none") != "none":
            raise RecBoleDiffusionError(
                f"{name} trains with a full softmax and takes no negative samples: set train_neg_sample_args: ~."
            )

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.check_config(config)

        # load parameters info
        self.hidden_size = config["hidden_size"]
        self.inner_size = config["inner_size"]
        self.n_layers = config["n_layers"]
        self.n_heads = config["n_heads"]
        self.hidden_dropout_prob = config["hidden_dropout_prob"]
        self.attn_dropout_prob = config["attn_dropout_prob"]
        self.emb_dropout = config["emb_dropout"]
        self.layer_norm_eps = config["layer_norm_eps"]
        self.position_embedding = config["position_embedding"]
        self.attention_mask = config["attention_mask"]
        self.lambda_uncertainty = config["lambda_uncertainty"]
        self.diffusion_steps = config["diffusion_steps"]
        self.noise_schedule = config["noise_schedule"]
        self.rescale_timesteps = config["rescale_timesteps"]
        self.schedule_sampler = config["schedule_sampler"]
        self.sampler = config["sampler"]
        self.sampling_steps = config["sampling_steps"]
        self.ddim_eta = config["ddim_eta"]

        # define layers and loss
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size)  # N(0, 1) init, as the official code
        self.position_embeddings = (
            nn.Embedding(self.max_seq_length, self.hidden_size) if self.position_embedding else None
        )
        self.input_dropout = nn.Dropout(self.emb_dropout)
        self.input_layer_norm = nn.LayerNorm(self.hidden_size, eps=self.layer_norm_eps)
        self.time_embedding = TimestepMLP(self.hidden_size)
        self.encoder = TransformerEncoder(
            self.n_layers, self.n_heads, self.hidden_size, self.inner_size, self.hidden_dropout_prob,
            self.attn_dropout_prob, self.layer_norm_eps, self.attention_mask,
        )
        self.output_dropout = nn.Dropout(self.hidden_dropout_prob)
        self.output_layer_norm = nn.LayerNorm(self.hidden_size, eps=self.layer_norm_eps)
        self.diffusion = GaussianDiffusion.from_config(
            self.noise_schedule, self.diffusion_steps, prediction_type="x0", variance_type="fixed_large",
            rescale_timesteps=self.rescale_timesteps,
        )
        self.timestep_sampler = create_timestep_sampler(self.schedule_sampler, self.diffusion_steps)
        self.loss_fct = nn.CrossEntropyLoss(reduction="none")
        # Cutting padding off a batch is exact only when padding keys are masked.
        self.trim_batches = self.attention_mask == "key_padding"

    def _trim(self, item_seq, item_seq_len):
        """Cut the batch to its longest real sequence (exact under key-padding attention)."""
        if not self.trim_batches:
            return item_seq
        return item_seq[:, : int(item_seq_len.max())]

    def encode_history(self, item_seq):
        """LN(Dropout(E[seq])) (+ position embedding): [B, L] -> [B, L, H], computed once per reverse chain."""
        seq_emb = self.item_embedding(item_seq)
        if self.position_embeddings is not None:
            positions = torch.arange(item_seq.shape[1], device=item_seq.device)
            seq_emb = seq_emb + self.position_embeddings(positions)[None]
        return self.input_layer_norm(self.input_dropout(seq_emb))

    def forward(self, item_seq, item_seq_len, seq_emb, x_t, t):
        """The approximator f(x_t, t, history) -> x0_pred [B, H].

        item_seq [B, L] (for masks), item_seq_len [B], seq_emb [B, L, H] from :meth:`encode_history`,
        x_t [B, H] the noised target, t [B] raw timesteps.
        """
        x = x_t + self.time_embedding(self.diffusion.scale_timesteps(t))
        # lambda ~ N(delta, delta), drawn per element: the uncertainty injected into each history item
        lam = self.lambda_uncertainty + self.lambda_uncertainty * torch.randn_like(seq_emb)
        z = seq_emb + lam * x.unsqueeze(1)  # z_i = e_i + lambda_i * (x_t + d_t)
        hidden = self.encoder(z, item_seq, item_seq_len - 1)
        return self.output_layer_norm(self.output_dropout(hidden))

    def calculate_loss(self, interaction):
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        item_seq = self._trim(interaction[self.ITEM_SEQ], item_seq_len)
        target = interaction[self.POS_ITEM_ID]
        x0 = self.item_embedding(target)
        t, weights = self.timestep_sampler.sample(x0.shape[0], x0.device)
        x_t = self.diffusion.q_sample(x0, t)
        x0_pred = self.forward(item_seq, item_seq_len, self.encode_history(item_seq), x_t, t)
        logits = x0_pred @ self.item_embedding.weight.t()
        losses = self.loss_fct(logits, target)
        self.timestep_sampler.update(t, losses)
        return (losses * weights).mean()

    def generate(self, interaction):
        """Run the reverse chain from x_T ~ N(0, I); returns the generated target embedding [B, H]."""
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        item_seq = self._trim(interaction[self.ITEM_SEQ], item_seq_len)
        seq_emb = self.encode_history(item_seq)
        x_T = torch.randn(item_seq.shape[0], self.hidden_size, device=item_seq.device)
        return self.diffusion.sample(
            lambda x_t, t: self.forward(item_seq, item_seq_len, seq_emb, x_t, t),
            x_T, sampler=self.sampler, sampling_steps=self.sampling_steps, eta=self.ddim_eta,
        )

    def predict(self, interaction):
        x0 = self.generate(interaction)
        return (x0 * self.item_embedding(interaction[self.ITEM_ID])).sum(-1)

    def full_sort_predict(self, interaction):
        # rounding: inner product of the generated embedding with every item embedding
        return self.generate(interaction) @ self.item_embedding.weight.t()
