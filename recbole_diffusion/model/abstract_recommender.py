"""The base of every sequential diffusion recommender here: the item table, the diffusion core built from
the yaml, the reverse chain, rounding by inner product, batch trimming and the shared hyperparameter checks.
A model adds its denoiser and its loss."""

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType
from torch import nn

from recbole_diffusion.diffusion import SCHEDULES, GaussianDiffusion, create_timestep_sampler, get_beta_schedule
from recbole_diffusion.diffusion.gaussian import SAMPLERS
from recbole_diffusion.diffusion.timesteps import TIMESTEP_SAMPLERS
from recbole_diffusion.utils import (
    RecBoleDiffusionError,
    check_choice,
    check_non_negative,
    check_positive_int,
)


class SequentialDiffusionRecommender(SequentialRecommender):
    """Reads the diffusion keys of the yaml (``diffusion_steps``, ``noise_schedule``, ``rescale_timesteps``,
    ``schedule_sampler``, ``sampler``, ``sampling_steps``, ``ddim_eta``) and builds ``self.diffusion`` and
    ``self.timestep_sampler``; subclasses set ``prediction_type``/``variance_type`` and implement
    :meth:`generate` (the reverse chain for a batch) and ``calculate_loss``."""

    input_type = InputType.POINTWISE
    prediction_type = "x0"
    variance_type = "fixed_small"

    @classmethod
    def check_config(cls, config):
        """Validate hyperparameters before data is loaded. Subclasses extend it; one clear error each."""
        name = cls.__name__
        check_positive_int(config, name, "hidden_size", "diffusion_steps", "MAX_ITEM_LIST_LENGTH")
        check_non_negative(config, name, "ddim_eta")
        check_choice(config, name, "noise_schedule", list(SCHEDULES))
        check_choice(config, name, "schedule_sampler", list(TIMESTEP_SAMPLERS))
        check_choice(config, name, "sampler", list(SAMPLERS))
        try:  # a schedule that is invalid for this T (e.g. linear with few steps) fails here, before any data
            get_beta_schedule(config["noise_schedule"], config["diffusion_steps"], **cls.schedule_kwargs(config))
        except ValueError as err:
            raise RecBoleDiffusionError(f"{name}: {err} Fix it with --diffusion_steps/--noise_schedule "
                                        f"or in properties/model/{name}.yaml.") from None
        for key in ("sampling_steps", "length_buckets"):
            if config[key] is not None:
                check_positive_int(config, name, key)
        neg = config["train_neg_sample_args"]
        if neg and neg.get("distribution", "none") != "none":
            raise RecBoleDiffusionError(
                f"{name} takes no negative samples in training: set train_neg_sample_args: ~ (or leave the default)."
            )

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.check_config(config)
        self.hidden_size = config["hidden_size"]
        self.diffusion_steps = config["diffusion_steps"]
        self.noise_schedule = config["noise_schedule"]
        self.rescale_timesteps = config["rescale_timesteps"]
        self.schedule_sampler = config["schedule_sampler"]
        self.sampler = config["sampler"]
        self.sampling_steps = config["sampling_steps"]
        self.ddim_eta = config["ddim_eta"]
        self.diffusion = self.build_diffusion(
            config, prediction_type=self.prediction_type, variance_type=self.variance_type,
            rescale_timesteps=self.rescale_timesteps, schedule_kwargs=self.schedule_kwargs(config),
        )
        self.timestep_sampler = create_timestep_sampler(self.schedule_sampler, self.diffusion_steps)
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size)
        self.length_buckets = config["length_buckets"] or 1
        # Cutting padding off a batch is exact when padding keys are masked; a model may turn it off.
        self.trim_batches = True

    def build_diffusion(self, config, **kwargs):
        """The diffusion process of the model: the shared Gaussian one; a model may return a subclass."""
        return GaussianDiffusion.from_config(self.noise_schedule, self.diffusion_steps, **kwargs)

    @classmethod
    def schedule_kwargs(cls, config):
        """Extra schedule parameters (e.g. DreamRec's beta_start/beta_end); none by default."""
        return {}

    def trimmed_sequence(self, interaction):
        """(item_seq cut to the longest real sequence of the batch, item_seq_len)."""
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        if self.trim_batches:
            item_seq = item_seq[:, : int(item_seq_len.max())]
        return item_seq, item_seq_len

    def length_buckets_of(self, interaction):
        """Yield ``(rows, item_seq, item_seq_len)``: the batch sorted by length and split into
        ``length_buckets`` groups, each cut to its own longest sequence.

        Every sequence is computed exactly as in the full batch (padding keys are masked), but a batch of mostly
        short sequences no longer pays for its longest one. Without trimming, one group: ``rows`` is ``slice(None)``.
        """
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        if not self.trim_batches:
            yield slice(None), item_seq, item_seq_len
            return
        order = torch.argsort(item_seq_len)
        for rows in order.tensor_split(min(self.length_buckets, order.shape[0])):
            lengths = item_seq_len[rows]
            yield rows, item_seq[rows, : int(lengths.max())], lengths

    def map_length_buckets(self, interaction, fn):
        """Apply ``fn(rows, item_seq, item_seq_len) -> [b, ...]`` to each length bucket; results in batch order."""
        out = None
        for rows, item_seq, item_seq_len in self.length_buckets_of(interaction):
            result = fn(rows, item_seq, item_seq_len)
            if isinstance(rows, slice):
                return result
            if out is None:
                out = result.new_empty((interaction[self.ITEM_SEQ].shape[0], *result.shape[1:]))
            out[rows] = result
        return out

    def sample_training_noise(self, x0):
        """t from the timestep sampler, its importance weights and x_t ~ q(x_t | x0)."""
        t, weights = self.timestep_sampler.sample(x0.shape[0], x0.device)
        return t, weights, self.diffusion.q_sample(x0, t)

    def reverse(self, denoise_fn, batch_size, device):
        """The configured reverse chain from x_T ~ N(0, I) [B, H]; ``denoise_fn(x_t, t)`` is the network."""
        x_T = torch.randn(batch_size, self.hidden_size, device=device)
        return self.diffusion.sample(denoise_fn, x_T, sampler=self.sampler, sampling_steps=self.sampling_steps,
                                     eta=self.ddim_eta)

    def generate(self, interaction):
        """The generated next-item embedding [B, H] for each sequence of the batch."""
        raise NotImplementedError

    def item_scores(self, generated):
        """Rounding: inner product of generated embeddings [B, H] with every item embedding -> [B, n_items]."""
        return generated @ self.item_embedding.weight.t()

    def predict(self, interaction):
        return (self.generate(interaction) * self.item_embedding(interaction[self.ITEM_ID])).sum(-1)

    def full_sort_predict(self, interaction):
        return self.item_scores(self.generate(interaction))
