r"""DDRM: Denoising Diffusion Recommender Model.

Reference:
    Jujia Zhao, Wenjie Wang, Yiyan Xu, Teng Sun, Fuli Feng. "Denoising Diffusion Recommender Model." SIGIR 2024
    (arXiv 2401.06982). Official code: Polaris-JZ/DDRM.

DDRM denoises the embeddings of a pretrained backbone (MF/BPR or LightGCN). Training (Algorithm 1), for a triple
(u, i, j): e_u and e_i are noised to one step t (eq. 6-7); the user denoiser rebuilds e_u from its noisy version
guided by the clean item embedding e_i, the item denoiser rebuilds e_i guided by e_u (collaborative guidance);
the loss mixes BPR on the denoised pair with their reconstruction error, L = (1 - alpha) L_bpr + alpha L_re
(eq. 22). Inference (Algorithm 2): the mean embedding of the user's training items (eq. 23), noised, runs the
reverse chain of the item denoiser guided by e_u; the result, an "ideal item", ranks all items by inner product
(eq. 24). The diffusion is the shared core's ``GaussianDiffusion`` (DiffRec's ``linear_var`` schedule by default).

Two silent choices of the official code are options here:
- ``freeze_backbone`` (default True, as Algorithm 1, which updates only the denoisers; the official code sets
  requires_grad=False on the backbone without a flag). False fine-tunes the backbone's output embeddings (for
  LightGCN, its propagated, layer-averaged table) together with the denoisers.
- ``inference_steps`` (default ~ = diffusion_steps T). The official ML-1M grid runs int(1.25 T) reverse steps:
  the extra ones embed timesteps the denoiser never saw in training, with the coefficients of step T - 1 (array
  index clamping). Here n <= T steps start from noise level n - 1 and run n - 1, ..., 0; n > T starts from level
  T - 1 and repeats step T - 1 (timestep embedding included) n - T times before T - 1, ..., 0.

The starting noise of inference is one fixed draw per user (drawn with the model), so a user's scores do not depend
on the batch or on the call. Every reverse step takes the posterior mean, as the official code does.
"""

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.init import xavier_normal_initialization
from recbole.model.layers import MLPLayers
from recbole.utils import InputType
from torch import nn

from recbole_diffusion.diffusion import GaussianDiffusion, UniformSampler, timestep_embedding
from recbole_diffusion.model.layers import Dropout
from recbole_diffusion.utils import (
    RecBoleDiffusionError,
    check_choice,
    check_non_negative,
    check_positive,
    check_positive_int,
    check_probability,
)

ACTIVATIONS = ("relu", "tanh", "sigmoid", "leakyrelu")


class GuidedDenoiser(nn.Module):
    r"""DDRM's reverse network f(x_t, c, t) -> x0_pred: an MLP over [Dropout(x_t), W sinusoid(t), c].

    Args:
        embedding_size (int): d, the size of x_t, of the guidance c and of the output.
        time_embedding_size (int): size of the timestep embedding.
        hidden_sizes (list of int): the MLP's hidden layers.
        activation (str): RecBole activation name, after every layer but the last.
        dropout (float): dropout on x_t.

    Shapes: x_t [B, d], guidance [B, d], timesteps [B] -> [B, d].
    """

    def __init__(self, embedding_size, time_embedding_size, hidden_sizes, activation, dropout):
        super().__init__()
        self.time_embedding_size = time_embedding_size
        self.time_layer = nn.Linear(time_embedding_size, time_embedding_size)
        self.dropout = Dropout(dropout)
        self.mlp = MLPLayers([2 * embedding_size + time_embedding_size, *hidden_sizes, embedding_size],
                             activation=activation, last_activation=False)
        self.apply(xavier_normal_initialization)

    def forward(self, x_t, guidance, timesteps):
        time = self.time_layer(timestep_embedding(timesteps, self.time_embedding_size))
        return self.mlp(torch.cat([self.dropout(x_t), time, guidance], dim=-1))


class DDRM(GeneralRecommender):
    r"""DDRM on pretrained backbone embeddings, trained on (user, positive, negative) triples.

    The backbone embeddings arrive as ``config["pretrained_file"]`` (made and cached by ``recbole_diffusion.pretrain``
    before the model is built, rows in this dataset's internal id order).
    """

    input_type = InputType.PAIRWISE

    @classmethod
    def check_config(cls, config):
        """Validate hyperparameters before any data is loaded; one clear error each."""
        name = cls.__name__
        check_probability(config, name, "alpha")
        check_probability(config, name, "dropout", inclusive_one=False)
        check_positive_int(config, name, "diffusion_steps", "time_embedding_size")
        check_positive(config, name, "noise_scale")
        check_non_negative(config, name, "noise_min", "noise_max", "confidence_beta")
        check_choice(config, name, "mlp_act_func", ACTIVATIONS)
        if config["inference_steps"] is not None:
            check_non_negative(config, name, "inference_steps")
            if not isinstance(config["inference_steps"], int):
                raise RecBoleDiffusionError(
                    f"Invalid hyperparameter inference_steps={config['inference_steps']!r} for {name}: must be an "
                    f"integer >= 0 (~ = diffusion_steps)."
                )
        if not isinstance(config["dims_dnn"], list) or any(
            isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in config["dims_dnn"]
        ):
            raise RecBoleDiffusionError(
                f"Invalid hyperparameter dims_dnn={config['dims_dnn']!r} for {name}: must be a list of positive "
                f"integers, e.g. [1100, 200, 1100]."
            )
        if not config["train_neg_sample_args"]:
            raise RecBoleDiffusionError(
                f"{name} trains on (user, positive, negative) triples: leave train_neg_sample_args at RecBole's "
                f"default or set it to {{distribution: uniform, sample_num: 1}}."
            )
        try:
            cls.build_diffusion(config)
        except ValueError as err:
            raise RecBoleDiffusionError(f"Invalid noise schedule for {name}: {err}") from None

    @classmethod
    def build_diffusion(cls, config):
        """The shared Gaussian diffusion from the yaml: the network predicts x0 (eq. 10)."""
        schedule = {k: config[k] for k in ("noise_scale", "noise_min", "noise_max", "beta_fixed")}
        return GaussianDiffusion.from_config(config["noise_schedule"], config["diffusion_steps"],
                                             prediction_type="x0", schedule_kwargs=schedule)

    @classmethod
    def pretrained_inputs(cls, config):
        return ("embeddings",)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.check_config(config)

        # load parameters info
        self.alpha = config["alpha"]
        self.confidence_beta = config["confidence_beta"]
        self.freeze_backbone = config["freeze_backbone"]
        self.diffusion_steps = config["diffusion_steps"]
        self.inference_steps = config["inference_steps"]
        if self.inference_steps is None:
            self.inference_steps = self.diffusion_steps
        self.dims_dnn = config["dims_dnn"]
        self.time_embedding_size = config["time_embedding_size"]
        self.mlp_act_func = config["mlp_act_func"]
        self.dropout = config["dropout"]
        self.pretrained_file = config["pretrained_file"]

        # define layers and loss
        user_table, item_table = self.load_pretrained()
        self.user_embedding = nn.Embedding.from_pretrained(user_table, freeze=self.freeze_backbone)
        self.item_embedding = nn.Embedding.from_pretrained(item_table, freeze=self.freeze_backbone)
        self.embedding_size = item_table.shape[1]
        self.diffusion = self.build_diffusion(config)
        self.timestep_sampler = UniformSampler(self.diffusion_steps)
        denoiser = (self.embedding_size, self.time_embedding_size, self.dims_dnn, self.mlp_act_func, self.dropout)
        self.user_denoiser = GuidedDenoiser(*denoiser)
        self.item_denoiser = GuidedDenoiser(*denoiser)

        # the training history (for the inference start) and the fixed inference noise
        history_item_id, _, _ = dataset.history_item_matrix()
        self.register_buffer("history_item_id", history_item_id, persistent=False)
        self.register_buffer("start_noise", torch.randn(self.n_users, self.embedding_size))

    def load_pretrained(self):
        """User [n_users, d] and item [n_items, d] backbone embeddings from ``pretrained_file``."""
        if not self.pretrained_file:
            raise RecBoleDiffusionError(
                "DDRM needs pretrained backbone embeddings: build it through recbole_diffusion's quick_start "
                "(run_recbole_diffusion / build), which pretrains and caches them."
            )
        tables = torch.load(self.pretrained_file, map_location="cpu", weights_only=True)
        users, items = tables["user_embedding"], tables["item_embedding"]
        if users.shape[0] != self.n_users or items.shape[0] != self.n_items:
            raise RecBoleDiffusionError(
                f"Pretrained file '{self.pretrained_file}' holds {users.shape[0]} users and {items.shape[0]} items; "
                f"this dataset has {self.n_users} and {self.n_items}. Delete it to have it rebuilt."
            )
        return users, items

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        e_u = self.user_embedding(user)
        e_i = self.item_embedding(interaction[self.ITEM_ID])
        e_j = self.item_embedding(interaction[self.NEG_ITEM_ID])

        t, _ = self.timestep_sampler.sample(user.shape[0], user.device)
        e_u_t = self.diffusion.q_sample(e_u, t)  # eq. (6)
        e_i_t = self.diffusion.q_sample(e_i, t)  # eq. (7)
        timesteps = self.diffusion.scale_timesteps(t)
        e_u_0 = self.user_denoiser(e_u_t, e_i, timesteps)  # guided by the item the user interacted with
        e_i_0 = self.item_denoiser(e_i_t, e_u, timesteps)  # guided by the user

        reconstruction = (((e_u_0 - e_u) ** 2).mean(-1) + ((e_i_0 - e_i) ** 2).mean(-1)) / 2
        pos_score = (e_u_0 * e_i_0).sum(-1)
        neg_score = (e_u_0 * e_j).sum(-1)
        bpr = -F.logsigmoid(pos_score - neg_score)
        loss = (1 - self.alpha) * bpr + self.alpha * reconstruction  # eq. (22)
        if self.confidence_beta > 0:
            loss = loss * torch.sigmoid(pos_score.detach()) ** self.confidence_beta
        return loss.mean()

    def start_point(self, user):
        """Mean embedding of each user's training items [B, d] (eq. 23); zeros for a user with none."""
        history = self.history_item_id[user]  # [B, L], padded with item 0
        counts = torch.zeros(user.shape[0], self.n_items, device=history.device)
        counts.scatter_add_(1, history, torch.ones_like(history, dtype=counts.dtype))
        counts[:, 0] = 0
        return counts @ self.item_embedding.weight / counts.sum(-1, keepdim=True).clamp(min=1)

    def reverse(self, x_start, guidance, steps, noise):
        """Noise ``x_start`` [B, d] to step min(steps, T) - 1 with ``noise`` [B, d] and run ``steps`` reverse steps
        of the item denoiser guided by ``guidance`` [B, d] (posterior means). ``steps`` = 0 returns ``x_start``."""
        if steps == 0:
            return x_start
        last = self.diffusion.num_timesteps - 1
        timesteps = [last] * max(steps - last - 1, 0) + list(range(min(steps - 1, last), -1, -1))
        t = torch.full((x_start.shape[0],), timesteps[0], dtype=torch.long, device=x_start.device)
        x_t = self.diffusion.q_sample(x_start, t, noise)
        for step in timesteps:
            t = torch.full_like(t, step)
            x0_pred = self.item_denoiser(x_t, guidance, self.diffusion.scale_timesteps(t))
            x_t, _, _ = self.diffusion.p_mean_variance(x0_pred, x_t, t)
        return x_t

    def generate(self, user):
        """The ideal item embedding [B, d] of each user (Algorithm 2)."""
        return self.reverse(self.start_point(user), self.user_embedding(user), self.inference_steps,
                            self.start_noise[user])

    def predict(self, interaction):
        ideal = self.generate(interaction[self.USER_ID])
        return (ideal * self.item_embedding(interaction[self.ITEM_ID])).sum(-1)

    def full_sort_predict(self, interaction):
        return self.generate(interaction[self.USER_ID]) @ self.item_embedding.weight.t()  # eq. (24)
