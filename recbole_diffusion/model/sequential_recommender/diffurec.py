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
    * Embedding tables start at N(0, 0.02^2) (``embedding_init_std``), not PyTorch's N(0, 1) of the official code
      (``embedding_init_std: 1.0``), with the diffusion noise scaled alike (``noise_std``) so that the paper's
      signal-to-noise ratios hold. With N(0, 1) the first logits have std ~ sqrt(H) and the model stays below
      popularity for its first ~10 epochs on Beauty (docs/sequential.md).
    * Evaluation starts each user's reverse chain from a fixed x_T (the base class), so it is deterministic.
"""

import torch
from torch import nn

from recbole_diffusion.model.abstract_recommender import SequentialDiffusionRecommender
from recbole_diffusion.model.layers import (
    ATTENTION_MASKS,
    DiffuRecApproximator,
    check_transformer_config,
    transformer_kwargs,
)
from recbole_diffusion.utils import check_choice, check_non_negative, check_probability


class DiffuRec(SequentialDiffusionRecommender):
    r"""DiffuRec: the target item embedding is diffused, a Transformer over the history recovers it."""

    prediction_type = "x0"
    variance_type = "fixed_large"  # official: log-variance from append(posterior_variance[1], betas[1:])

    @classmethod
    def check_config(cls, config):
        super().check_config(config)
        name = cls.__name__
        check_transformer_config(config, name)
        check_probability(config, name, "emb_dropout", inclusive_one=False)
        check_non_negative(config, name, "lambda_uncertainty")
        check_choice(config, name, "attention_mask", list(ATTENTION_MASKS))

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info (the Transformer's RecBole keys go to the approximator, see layers.transformer_kwargs)
        self.emb_dropout = config["emb_dropout"]
        self.position_embedding = config["position_embedding"]
        self.attention_mask = config["attention_mask"]
        self.lambda_uncertainty = config["lambda_uncertainty"]

        # define layers (item_embedding from the base class)
        self.position_embeddings = (
            nn.Embedding(self.max_seq_length, self.hidden_size) if self.position_embedding else None
        )
        self.approximator = DiffuRecApproximator(
            **transformer_kwargs(config), emb_dropout=self.emb_dropout, attention_mask=self.attention_mask
        )
        self.loss_fct = nn.CrossEntropyLoss(reduction="none")
        self.trim_batches = self.attention_mask == "key_padding"

        # parameters initialization: embedding tables N(0, embedding_init_std^2) (official: N(0, 1))
        self.init_embeddings()

    def encode_history(self, item_seq):
        """LN(Dropout(E[seq] (+ position embedding))): [B, L] -> [B, L, H], computed once per reverse chain."""
        seq_emb = self.item_embedding(item_seq)
        if self.position_embeddings is not None:
            positions = torch.arange(item_seq.shape[1], device=item_seq.device)
            seq_emb = seq_emb + self.position_embeddings(positions)[None]
        return self.approximator.history(seq_emb)

    def forward(self, item_seq, item_seq_len, history, x_t, t):
        """The approximator f(x_t, t, history) -> x0_pred [B, H].

        item_seq [B, L] (for masks), item_seq_len [B], history [B, L, H] from :meth:`encode_history`,
        x_t [B, H] the noised target, t [B] raw timesteps.
        """
        # lambda ~ N(delta, delta), drawn per element: the uncertainty injected into each history item
        lam = self.lambda_uncertainty + self.lambda_uncertainty * torch.randn_like(history)
        return self.approximator(history, item_seq, item_seq_len - 1, x_t, self.diffusion.scale_timesteps(t), lam)

    def calculate_loss(self, interaction):
        target = interaction[self.POS_ITEM_ID]
        x0 = self.item_embedding(target)
        t, weights, x_t = self.sample_training_noise(x0)
        x0_pred = self.map_length_buckets(
            interaction, lambda rows, seq, lengths: self.forward(seq, lengths, self.encode_history(seq), x_t[rows], t[rows])
        )
        losses = self.loss_fct(self.item_scores(x0_pred), target)
        self.timestep_sampler.update(t, losses)
        return (losses * weights).mean()

    def generate(self, interaction):
        def reverse_chain(rows, item_seq, item_seq_len):
            history = self.encode_history(item_seq)
            return self.reverse(lambda x_t, t: self.forward(item_seq, item_seq_len, history, x_t, t),
                                self.start_noise(interaction, rows))

        return self.map_length_buckets(interaction, reverse_chain)
