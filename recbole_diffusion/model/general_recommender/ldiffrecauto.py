r"""LDiffRecAuto: L-DiffRec that clusters its items itself.

Reference:
    Wenjie Wang, Yiyan Xu, Fuli Feng, Xinyu Lin, Xiangnan He and Tat-Seng Chua. "Diffusion Recommender Model."
    SIGIR 2023 (arXiv 2304.04971), section 3.4 (L-DiffRec). Official code: YiyanXu/DiffRec, L-DiffRec/.

L-DiffRec groups items by k-means on pretrained item embeddings, compresses each group's part of a user's
interaction vector with a group-specific VAE encoder, and runs DiffRec's diffusion in the concatenated latent space.
RecBole's ``LDiffRec`` groups items only when ``<dataset_path>/item_emb.npy`` (indexed by internal id) exists and
``kmeans_pytorch`` is installed; its default ``n_cate: 1`` does not cluster at all.

``LDiffRecAuto`` is RecBole's model (its latent diffusion, VAE loss and annealing, all inherited) with the groups
made by ``recbole_diffusion.pretrain`` before the model is built: scikit-learn's KMeans (seeded) on the item
embeddings of a RecBole backbone (LightGCN by default, or BPR) pretrained on the same split, or on a given
``item_emb_file`` aligned to RecBole's ids by item token; the result is cached. One CLI call does it all:
``run_recbole_diffusion.py --model=LDiffRecAuto --dataset=ml-1m``.
"""

import os

import numpy as np
import torch
from recbole.model.general_recommender.diffrec import DNN, DiffRec
from recbole.model.general_recommender.ldiffrec import AutoEncoder, LDiffRec
from recbole.model.init import xavier_normal_initialization
from recbole.model.layers import MLPLayers
from torch import nn

from recbole_diffusion.model.layers import Dropout
from recbole_diffusion.utils import RecBoleDiffusionError, check_positive, check_positive_int


class ClusteredAutoEncoder(AutoEncoder):
    r"""RecBole's L-DiffRec autoencoder for ``n_cate`` > 1, built from given item groups.

    RecBole's ``AutoEncoder`` computes the groups itself with ``kmeans_pytorch``; this one takes them, then builds
    the same layers: one encoder per group, each group's latent size its share of ``in_dims`` (at least 1; the
    last group takes the remainder), and one linear decoder (``out_dims`` = []) or one decoder per group. Its
    ``Encode``/``Decode`` are RecBole's.

    Args:
        cluster_ids (torch.LongTensor): [n_items] group of each internal item id, -1 for [PAD].
        in_dims (list): encoder sizes, RecBole's reversed ``in_dims`` (as ``LDiffRec`` passes them).
        out_dims (list): decoder hidden sizes; [] for one linear decoder.
    """

    def __init__(self, cluster_ids, in_dims, out_dims, act_func, reparam=True, dropout=0.1):
        nn.Module.__init__(self)
        self.n_cate = int(cluster_ids.max()) + 1
        self.in_dims = in_dims
        self.out_dims = out_dims
        self.act_func = act_func
        self.n_item = int((cluster_ids >= 0).sum())
        self.reparam = reparam
        self.dropout = Dropout(dropout)
        # Group i's internal item ids; a batch's columns are read, and predictions written back, in this order.
        self.category_idx = [torch.nonzero(cluster_ids == i).flatten() for i in range(self.n_cate)]
        self.category_map = torch.cat(self.category_idx)
        self.category_len = [len(idx) for idx in self.category_idx]

        encoders, latent_dims = [], []
        for i, size in enumerate(self.category_len):
            if i == self.n_cate - 1:
                dims = list(np.array(in_dims) - np.array(latent_dims).sum(axis=0))
            else:
                dims = [max(int(size / self.n_item * d), 1) for d in in_dims]
            if min(dims) < 1:
                raise RecBoleDiffusionError(
                    f"Invalid hyperparameter n_cate={self.n_cate} for LDiffRecAuto: in_dims={in_dims[::-1]} leaves "
                    f"no latent unit for the last item group. Use fewer clusters or a larger in_dims."
                )
            encoders.append(MLPLayers([size] + dims[:-1] + [dims[-1] * 2], activation=act_func))
            latent_dims.append(dims)
        self.encoder = nn.ModuleList(encoders)
        self.decode_dim = [dims[::-1] for dims in latent_dims]
        if len(out_dims) == 0:
            self.decoder = MLPLayers([in_dims[-1], self.n_item], activation=None)
        else:
            self.decoder = nn.ModuleList(
                MLPLayers(self.decode_dim[i] + [size], activation=act_func, last_activation=False)
                for i, size in enumerate(self.category_len)
            )
        self.apply(xavier_normal_initialization)


class LDiffRecAuto(LDiffRec):
    r"""RecBole's L-DiffRec with its item groups made and cached by ``recbole_diffusion.pretrain``.

    ``n_cate`` > 1 clusters; 1 is RecBole's ungrouped L-DiffRec. The groups arrive as ``config["item_cluster_file"]``
    (set by ``quick_start.build``), cluster ids already in this dataset's internal id order.
    """

    @classmethod
    def check_config(cls, config):
        """Checks that need no data; the cluster count against the items is checked once the data is loaded."""
        check_positive_int(config, cls.__name__, "n_cate", "steps", "embedding_size")
        if config["mlp_learning_rate"] is not None:
            check_positive(config, cls.__name__, "mlp_learning_rate")
        if not config["in_dims"] or any(not isinstance(d, int) or d < 1 for d in config["in_dims"]):
            raise RecBoleDiffusionError(
                f"Invalid hyperparameter in_dims={config['in_dims']!r} for {cls.__name__}: must be a non-empty list of "
                f"positive integers, e.g. [300]."
            )
        emb_file = config["item_emb_file"]
        if emb_file is not None and not isinstance(emb_file, str):
            raise RecBoleDiffusionError(
                f"Invalid hyperparameter item_emb_file={emb_file!r} for {cls.__name__}: must be a path to a .npy file."
            )
        if emb_file and config["n_cate"] > 1:
            if not os.path.isfile(emb_file):
                raise RecBoleDiffusionError(
                    f"item_emb_file '{emb_file}' does not exist. Give the path of an [n_items, dim] .npy file "
                    f"(row i = item token i), or leave item_emb_file out to pretrain item embeddings."
                )

    @classmethod
    def pretrained_inputs(cls, config):
        return ("item_clusters",) if config["n_cate"] > 1 else ()

    def __init__(self, config, dataset):
        # LDiffRec.__init__ would build its autoencoder with kmeans_pytorch: set up DiffRec, then the rest here.
        DiffRec.__init__(self, config, dataset)
        self.check_config(config)

        # load parameters info (RecBole's LDiffRec keys)
        self.n_cate = config["n_cate"]
        self.reparam = config["reparam"]
        self.ae_act_func = config["ae_act_func"]
        self.in_dims = config["in_dims"]
        self.out_dims = config["out_dims"]
        self.lamda = config["lamda"]
        self.anneal_cap = config["anneal_cap"]
        self.anneal_steps = config["anneal_steps"]
        self.vae_anneal_cap = config["vae_anneal_cap"]
        self.vae_anneal_steps = config["vae_anneal_steps"]
        self.item_cluster_file = config["item_cluster_file"]
        self.mlp_learning_rate = config["mlp_learning_rate"]
        self.update_count = 0
        self.update_count_vae = 0

        # define layers
        in_dims = self.in_dims[::-1]
        if self.n_cate > 1:
            cluster_ids = self.load_cluster_ids()
            self.autoencoder = ClusteredAutoEncoder(cluster_ids, in_dims, self.out_dims, self.ae_act_func, self.reparam)
        else:
            # RecBole's ungrouped autoencoder reads only the number of rows of its item table.
            self.autoencoder = AutoEncoder(torch.zeros(self.n_items - 1, 1), 1, in_dims, self.out_dims, self.device,
                                           self.ae_act_func, self.reparam)
        self.latent_size = in_dims[-1]
        self.mlp = DNN(dims=[self.latent_size] + config["dims_dnn"] + [self.latent_size], emb_size=self.emb_size,
                       time_type="cat", norm=self.norm, act_func=self.mlp_act_func)

    def optimizer_groups(self):
        """What the trainer optimises (``SafeCheckpointMixin._build_optimizer``): with ``mlp_learning_rate`` set, the
        denoiser MLP at that rate and the autoencoder at ``learning_rate``, the official lr2 and lr1; else one group."""
        if self.mlp_learning_rate is None:
            return self.parameters()
        mlp = {id(p) for p in self.mlp.parameters()}
        return [{"params": [p for p in self.parameters() if id(p) not in mlp]},
                {"params": list(self.mlp.parameters()), "lr": self.mlp_learning_rate}]

    def load_cluster_ids(self):
        """Cluster ids [n_items] from ``item_cluster_file``, -1 at [PAD]."""
        if not self.item_cluster_file:
            raise RecBoleDiffusionError(
                "LDiffRecAuto with n_cate > 1 needs its item clusters: build it through recbole_diffusion's "
                "quick_start (run_recbole_diffusion / build), which makes and caches them."
            )
        cluster_ids = torch.load(self.item_cluster_file, map_location="cpu", weights_only=True)["cluster_ids"]
        if cluster_ids.shape != (self.n_items,) or int(cluster_ids.max()) + 1 != self.n_cate:
            raise RecBoleDiffusionError(
                f"Item cluster file '{self.item_cluster_file}' holds {tuple(cluster_ids.shape)} ids in "
                f"{int(cluster_ids.max()) + 1} groups; this model needs {self.n_items} ids in {self.n_cate}. Delete it "
                f"to have it rebuilt."
            )
        return cluster_ids
