# -*- coding: utf-8 -*-
r"""
SeqDiffRec
################################################

Reference:
    Hanwen Du, Huanhuan Yuan, Zhen Huang, Pengpeng Zhao, Xiaofang Zhou. "Sequential Recommendation with Diffusion
    Models." arXiv 2304.04541, 2023. The paper calls its model DiffRec; we call it SeqDiffRec because RecBole's
    DiffRec (Wang et al., SIGIR 2023) is a different model.

Reference code:
    None is public (the paper promises it "upon acceptance"); this is the first public implementation.

Only the target item's embedding h_T^0 = E(v_T) is noised; the history stays clean. The approximator is a
Transformer over H^n = [h_1^0 + y_1 + z_n, ..., h_{T-1}^0 + y_{T-1} + z_n, h_T^n + y_T + z_n] (learned positions
y, step embedding z_n at every position) and predicts h_T^0 at the target slot:
f(h_T^n, n) = TransformerEncoder(H^n)[T]. A separate linear layer with bias rounds an embedding back to items,
p(v | h^0) = softmax(W h^0 + b). Loss = MSE(f(h_T^n, n), h_T^0) + rec_loss_weight * CE(p(v_T | h^0)). Fast
inference: a placeholder takes the target slot, k noise draws are each denoised in ONE step from t = T-1, and the
k predictions are averaged before rounding.

Choices the paper leaves open, made here (each is a key of ``properties/model/SeqDiffRec.yaml``):
    * Scoring: items are ranked by the rounding head's logits W h^0 + b (the paper's reverse process ends with
      this rounding step), not by inner product with the item embeddings.
    * Rounding input (``rounding_input``): the rec loss is the cross-entropy of the rounding head on the
      approximator's prediction f(h_T^n, n), the vector the head rounds at inference, so the head is trained on
      what it will see. ``embedding`` is the literal reading of the paper's objective, -log p(v_T | h_T^0) with
      h_T^0 = E(v_T). Gradients reach the item table through the MSE target as well, as in Diffusion-LM.
      ``final`` rounds f(x_T, T-1) from a second pass at the last step, the one-step prediction inference
      rounds: at a uniformly drawn n the noised target is often visible in h_T^n, and the cross-entropy on
      f(h_T^n, n) then trains copying it, not ranking from the history (a review's measurement; an option).
    * Options beyond the paper, off by default: ``tie_rounding`` makes the head's W the item table E
      (Diffusion-LM's tied rounding; the head keeps its bias), so the cross-entropy reaches E directly;
      ``normalize_embeddings`` feeds h^0 = LayerNorm(E(v)) (no affine) for the history and the target, at the
      scale of the step embedding z_n (at N(0, 0.02^2) E(v) is several times smaller) and of the approximator's
      LayerNorm'd output, so the MSE cannot shrink the table to a point.
    * Loss weights: MSE + 1.0 * CE (the paper's objective is an unweighted sum); the MSE is the mean over the
      hidden dimensions (DreamRec's F.mse_loss), so the weight does not depend on hidden_size.
    * Attention (``causal_attention``): bidirectional by default: the paper writes "TransformerEncoder" and the
      history positions may attend to the noised target; padding keys are masked, so cutting a batch into
      length buckets (``length_buckets``) is exact.
    * Target slot: appended right after the last real item (RecBole pads on the right), at position len(history);
      positions count from the start of the sequence, as in SASRec, so the table has MAX_ITEM_LIST_LENGTH + 1 rows.
    * Placeholder: the target slot holds the noise x_T ~ N(0, I) itself. Algorithm 2 noises the embedding of an
      [unk] token to step N; with the cosine schedule sqrt(abar_N) < 2e-3, so that is the same input, and an [unk]
      embedding would never be trained (training always noises the true target).
    * Schedule: cosine with T = 32. One-step inference starts from pure noise, so training at t = T-1 must see
      (almost) pure noise: the cosine schedule ends at abar_T ~ 1e-6 for any T. T only sets the grid of training
      noise levels (inference takes one step); 32 as DiffuRec, the contemporary model closest to this one.
    * The one step is DDIM from t = T-1 to x_0 (``sampler: ddim``, ``sampling_steps: 1``), which returns the
      approximator's x_0 prediction exactly. ``sampler: ancestral`` runs the full chain of the paper's Algorithm 2
      instead, still averaged over ``inference_samples`` draws.
    * k (``inference_samples``): 4; the paper says "several". Architecture sizes are RecBole's SASRec defaults
      (hidden 64, 2 layers, 2 heads, inner 256) and dropout DiffuRec's 0.1: the paper's values are not known.
    * The paper's "efficient training strategy" is not described in enough detail to implement; not included.
    * Embedding tables start at N(0, 0.02^2) (``embedding_init_std``), the noise scaled alike (``noise_std``).
"""

import torch
import torch.nn.functional as F
from torch import nn

from recbole_diffusion.model.abstract_recommender import SequentialDiffusionRecommender
from recbole_diffusion.model.layers import PositionalSequenceEncoder, TimestepMLP, check_transformer_config
from recbole_diffusion.utils import check_choice, check_non_negative, check_positive_int

ROUNDING_INPUTS = ("final", "prediction", "embedding")


class SeqDiffRec(SequentialDiffusionRecommender):
    r"""SeqDiffRec (Du et al.'s DiffRec): the noised target embedding joins the history in one Transformer."""

    prediction_type = "x0"
    variance_type = "fixed_small"

    @classmethod
    def check_config(cls, config):
        super().check_config(config)
        name = cls.__name__
        check_transformer_config(config, name)
        check_positive_int(config, name, "inference_samples")
        check_non_negative(config, name, "rec_loss_weight")
        check_choice(config, name, "rounding_input", list(ROUNDING_INPUTS))
        check_choice(config, name, "causal_attention", [False, True])
        check_choice(config, name, "normalize_embeddings", [False, True])
        check_choice(config, name, "tie_rounding", [False, True])

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info (the Transformer keys are read by PositionalSequenceEncoder.from_config)
        self.causal_attention = config["causal_attention"]
        self.rec_loss_weight = config["rec_loss_weight"]
        self.rounding_input = config["rounding_input"]
        self.inference_samples = config["inference_samples"]
        self.normalize_embeddings = config["normalize_embeddings"]
        self.tie_rounding = config["tie_rounding"]

        # define layers and loss (item_embedding from the base class)
        # one more position than the history: the target slot after the last item
        self.approximator = PositionalSequenceEncoder.from_config(config, self.max_seq_length + 1,
                                                                  causal=self.causal_attention)
        self.step_embedding = TimestepMLP(self.hidden_size)
        self.rounding = nn.Linear(self.hidden_size, self.n_items)  # p(v | h^0) = softmax(W h^0 + b)
        if self.tie_rounding:  # W = E (Diffusion-LM's tied rounding); only the bias b is the head's own
            del self.rounding.weight
            self.rounding.register_parameter("weight", None)
        self.loss_fct = nn.CrossEntropyLoss(reduction="none")
        # an id past the item table: marks the target slot as a real position for the attention mask only
        self.placeholder_id = self.n_items

        # parameters initialization: embedding tables N(0, embedding_init_std^2)
        self.init_embeddings()

    def embed(self, items):
        """h^0 = E(v), or LayerNorm(E(v)) without affine (``normalize_embeddings``): every h^0 has norm sqrt(H),
        the scale of the approximator's LayerNorm'd output, so the MSE cannot shrink the table to a point and the
        signal-to-noise ratio of each step stays that of unit data with noise_std 1."""
        h = self.item_embedding(items)
        return F.layer_norm(h, (self.hidden_size,)) if self.normalize_embeddings else h

    def rounding_weight(self):
        return self.item_embedding.weight if self.tie_rounding else self.rounding.weight

    def forward(self, item_seq, item_seq_len, x_t, t):
        """f(h_T^n, n): item_seq [B, L] (right-padded history), item_seq_len [B], x_t [B, H] the noised target,
        t [B] raw timesteps -> x0_pred [B, H], read at the target slot (position item_seq_len)."""
        item_seq = F.pad(item_seq, (0, 1))
        slot = torch.arange(item_seq.shape[1], device=item_seq.device)[None] == item_seq_len[:, None]
        h = torch.where(slot[..., None], x_t[:, None], self.embed(item_seq))
        z_n = self.step_embedding(self.diffusion.scale_timesteps(t))
        # H^n = [h_1 + y_1 + z_n, ..., h_T^n + y_T + z_n]; y is added inside the encoder
        return self.approximator(h + z_n[:, None], item_seq.masked_fill(slot, self.placeholder_id), item_seq_len)

    def approximate(self, interaction, x_t, t):
        """:meth:`forward` for each sequence of ``interaction``, by length bucket: x_t [B, H], t [B] -> [B, H]."""
        return self.map_length_buckets(
            interaction,
            lambda rows, item_seq, item_seq_len: self.forward(item_seq, item_seq_len, x_t[rows], t[rows]),
        )

    def calculate_loss(self, interaction):
        target = interaction[self.POS_ITEM_ID]
        x0 = self.embed(target)
        t, weights, x_t = self.sample_training_noise(x0)
        x0_pred = self.approximate(interaction, x_t, t)
        if self.rounding_input == "final":
            # the vector inference rounds: one step from (almost) pure noise at t = T-1
            t_last = torch.full_like(t, self.diffusion_steps - 1)
            rounded = self.approximate(interaction, self.diffusion.q_sample(x0, t_last), t_last)
        else:
            rounded = x0_pred if self.rounding_input == "prediction" else x0
        rec_loss = self.loss_fct(self.item_scores(rounded), target)
        losses = F.mse_loss(x0_pred, x0, reduction="none").mean(-1) + self.rec_loss_weight * rec_loss
        self.timestep_sampler.update(t, losses)
        return (losses * weights).mean()

    def generate(self, interaction):
        """The mean of ``inference_samples`` reverse chains (by default one DDIM step each): [B, H]."""
        # the k draws of a user are k rows of one batch: row j * B + i is draw j of user i
        samples = interaction.repeat(self.inference_samples)
        x_T = self.start_noise(interaction, draws=self.inference_samples)
        x0 = self.reverse(lambda x_t, t: self.approximate(samples, x_t, t), x_T)
        return x0.view(self.inference_samples, len(interaction), -1).mean(0)

    def item_scores(self, generated):
        """Rounding logits W h^0 + b: [B, H] -> [B, n_items]."""
        return F.linear(generated, self.rounding_weight(), self.rounding.bias)

    def predict(self, interaction):
        item = interaction[self.ITEM_ID]
        generated = self.generate_for_evaluation(interaction)
        return (generated * self.rounding_weight()[item]).sum(-1) + self.rounding.bias[item]
