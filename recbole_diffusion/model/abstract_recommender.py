"""The base of every sequential diffusion recommender here: the item table and its init, the diffusion core
built from the yaml, the reverse chain (with a fixed start per user at evaluation), rounding by inner product,
batch trimming and the shared hyperparameter checks. A model adds its denoiser and its loss."""

import contextlib

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
    check_positive,
    check_positive_int,
)


class SequentialDiffusionRecommender(SequentialRecommender):
    """Reads the diffusion keys of the yaml (``diffusion_steps``, ``noise_schedule``, ``rescale_timesteps``,
    ``schedule_sampler``, ``sampler``, ``sampling_steps``, ``ddim_eta``, ``embedding_init_std``, ``noise_std``)
    and builds ``self.diffusion`` and ``self.timestep_sampler``; subclasses set
    ``prediction_type``/``variance_type``, implement :meth:`generate` (the reverse chain for a batch) and
    ``calculate_loss``, and call :meth:`init_embeddings` at the end of their ``__init__``.

    Initialisation and noise scale. ``embedding_init_std`` is the standard deviation of every embedding table
    of the model (items, positions). The official codes keep PyTorch's N(0, 1) (``embedding_init_std: 1.0``);
    the papers do not specify it. Where x_0 is an item embedding, the forward noise has standard deviation
    ``noise_std``, by default (``~``) the init's, so that at initialisation each step has the signal-to-noise
    ratio abar_t / (1 - abar_t) of the paper's N(0, 1) table with unit noise, whatever the init.

    Evaluation is deterministic: the reverse chain of a user starts from the same x_T at every evaluation (drawn
    once from ``seed`` and the user id), and any other draw of the chain (ancestral noise, DiffuRec's lambda) is
    seeded from the batch, so two evaluations of the same weights give the same metrics.
    """

    input_type = InputType.POINTWISE
    prediction_type = "x0"
    variance_type = "fixed_small"

    @classmethod
    def check_config(cls, config):
        """Validate hyperparameters before data is loaded. Subclasses extend it; one clear error each."""
        name = cls.__name__
        check_positive_int(config, name, "hidden_size", "diffusion_steps", "MAX_ITEM_LIST_LENGTH")
        check_non_negative(config, name, "ddim_eta")
        check_positive(config, name, "embedding_init_std")
        if config["noise_std"] is not None:
            check_positive(config, name, "noise_std")
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
        self.embedding_init_std = config["embedding_init_std"]
        self.noise_std = config["noise_std"] if config["noise_std"] is not None else self.embedding_init_std
        self.eval_seed = config["seed"]
        self.n_users = dataset.user_num
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
        """The diffusion process of the model: the shared Gaussian one, noise of std ``noise_std``; a model may
        return a subclass."""
        return GaussianDiffusion.from_config(self.noise_schedule, self.diffusion_steps, noise_std=self.noise_std,
                                             **kwargs)

    def init_embeddings(self):
        """N(0, embedding_init_std^2) for every ``nn.Embedding`` of the model; call at the end of ``__init__``."""
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=self.embedding_init_std)

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

    def start_noise(self, interaction, rows=slice(None), draws=1):
        """x_T ~ N(0, noise_std^2 I) for the reverse chains of ``interaction[rows]``: [draws * b, H], draw-major
        (row j * b + i is draw j of sequence i, the layout of ``interaction.repeat(draws)``).

        In evaluation each user's draws are fixed: rows of a table drawn once from ``seed``, indexed by user id.
        """
        device = interaction[self.ITEM_SEQ].device
        users = interaction[self.USER_ID][rows] if self.USER_ID in interaction else None
        if self.training or users is None:
            count = interaction[self.ITEM_SEQ][rows].shape[0]
            return self.diffusion.prior((draws * count, self.hidden_size), device=device)
        table = getattr(self, "_start_noise_table", None)
        if table is None or table.shape[1] < draws:
            generator = torch.Generator().manual_seed(int(self.eval_seed))
            table = torch.randn(max(self.n_users, int(users.max()) + 1), draws, self.hidden_size, generator=generator)
            self._start_noise_table = table
        x_T = table[users.cpu(), :draws].transpose(0, 1).reshape(-1, self.hidden_size)
        return self.diffusion.noise_std * x_T.to(device)

    def reverse(self, denoise_fn, x_T):
        """The configured reverse chain from ``x_T`` [B, H] (see :meth:`start_noise`); ``denoise_fn(x_t, t)`` is
        the network."""
        return self.diffusion.sample(denoise_fn, x_T, sampler=self.sampler, sampling_steps=self.sampling_steps,
                                     eta=self.ddim_eta)

    def generate(self, interaction):
        """The generated next-item embedding [B, H] for each sequence of the batch."""
        raise NotImplementedError

    @contextlib.contextmanager
    def _evaluation_randomness(self, interaction):
        """In evaluation, every random draw inside comes from a generator seeded by ``seed`` and the batch's
        users, and the global random state is restored afterwards: evaluations repeat exactly and leave training
        untouched."""
        if self.training:
            yield
            return
        devices = [self.device] if torch.device(self.device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            users = interaction[self.USER_ID] if self.USER_ID in interaction else interaction[self.ITEM_SEQ_LEN]
            torch.manual_seed(int(self.eval_seed) * 1_000_003 + int(users[0]) * 7919 + len(interaction))
            yield

    def generate_for_evaluation(self, interaction):
        with self._evaluation_randomness(interaction):
            return self.generate(interaction)

    def item_scores(self, generated):
        """Rounding: inner product of generated embeddings [B, H] with every item embedding -> [B, n_items]."""
        return generated @ self.item_embedding.weight.t()

    def predict(self, interaction):
        return (self.generate_for_evaluation(interaction) * self.item_embedding(interaction[self.ITEM_ID])).sum(-1)

    def full_sort_predict(self, interaction):
        return self.item_scores(self.generate_for_evaluation(interaction))
