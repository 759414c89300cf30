# -*- coding: utf-8 -*-
r"""
SeqPop
################################################

The popularity floor of the sequential protocol: every item is scored by the number of times it is a
training target (the ``item_id`` of the training split's rows, one per prefix of each user's training
sequence), whatever the history. It runs on the same split, dataloaders and full-ranking evaluator as the
sequential models (leave-one-out, no history masking; padding is never ranked, RecBole's evaluator sets its
score to -inf), which RecBole's ``Pop`` (a general model, another split) does not.

The counts are computed once from the training split when the model is built; training is one epoch of a
zero loss (RecBole's trainer needs a parameter and a loss), so ``--model=SeqPop`` costs the evaluation only.
Ties between items of equal count are broken by item id (lower id first), so results are deterministic.
"""

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType
from torch import nn


class SeqPop(SequentialRecommender):
    r"""Items ranked by how often they are a training target; the history is ignored."""

    input_type = InputType.POINTWISE
    # compare.py: the floor that every other model of a table is measured against, not a competitor
    is_popularity_floor = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        targets = torch.as_tensor(dataset.inter_feat[self.POS_ITEM_ID]).long()
        counts = torch.bincount(targets, minlength=self.n_items)[: self.n_items]
        # score = n_items - rank, rank by count then item id (a stable sort): exact in float32, ties broken
        order = torch.sort(-counts, stable=True).indices
        scores = torch.empty(self.n_items)
        scores[order] = torch.arange(self.n_items, 0, -1, dtype=torch.float32)
        self.register_buffer("item_counts", counts)
        self.register_buffer("scores", scores, persistent=False)
        # RecBole's trainer builds an optimizer over the parameters and back-propagates the loss: give it both
        self.fake_loss = nn.Parameter(torch.zeros(1))

    def calculate_loss(self, interaction):
        return self.fake_loss.sum()

    def predict(self, interaction):
        return self.scores[interaction[self.ITEM_ID]]

    def full_sort_predict(self, interaction):
        return self.scores.repeat(interaction[self.ITEM_SEQ].shape[0], 1)  # a copy: the evaluator writes into it
