"""Length buckets for RecBole's sequential baselines: each batch is sorted by sequence length, split into
``length_buckets`` groups, and each group is cut to its own longest sequence before the model sees it.

RecBole pads every sequence to ``MAX_ITEM_LIST_LENGTH`` (50), while Amazon Beauty sequences average 9 items: most
of a batch's attention or recurrence runs over padding. For the models listed in :data:`EXACT` the cut changes
nothing but the time: they read the hidden state at ``item_seq_len - 1``, positions count from the left (RecBole
pads on the right), and padding keys are masked (SASRec, BERT4Rec) or come after the state read (GRU4Rec). Scores
in eval mode and the loss with dropout off are the same as RecBole's, bucketed or not (``tests/test_bucketing.py``).
Models where this is not exact keep RecBole's path.

BERT4Rec needs no extra slot in RecBole 1.2.1: in training its mask token replaces items of the sequence (the data
transform draws them before the model sees the batch, so buckets do not change which items are masked), and in
evaluation ``reconstruct_test_data`` appends one column, writes the mask at ``item_seq_len`` and drops the first
column, which fits any width >= the longest sequence.

The loss of a batch is the weighted mean of its groups' mean losses with the weights that give the batch's own
mean: the share of rows (a mean over rows: SASRec, GRU4Rec) or the share of loss terms (BERT4Rec averages over
its masked positions, those with ``MASK_INDEX > 0``). BERT4Rec's CE loss also skips scoring its padding mask slots
(:meth:`LengthBucketedMixin._bert4rec_masked_ce`): the same terms, far fewer scores. Training is not
bit-identical (dropout draws follow the tensor shapes); ``length_buckets: 0`` restores RecBole's own path.
"""

import torch

# model name -> what its batch loss averages over: None (rows) or the field whose positive entries are its terms
EXACT = {"SASRec": None, "GRU4Rec": None, "BERT4Rec": "MASK_INDEX"}


def bucketed(model_class):
    """``model_class`` with length buckets (a subclass of the same name), or itself when not in :data:`EXACT`."""
    name = model_class.__name__
    if name not in EXACT or getattr(model_class, "_length_bucketed", False):
        return model_class
    return type(name, (LengthBucketedMixin, model_class), {"__module__": model_class.__module__,
                                                           "_length_bucketed": True, "_loss_terms": EXACT[name]})


class LengthBucketedMixin:
    """Mixed in before a RecBole sequential model: ``calculate_loss``, ``predict`` and ``full_sort_predict`` run
    per length bucket."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.length_buckets = config["length_buckets"]
        if isinstance(self.length_buckets, bool) or not isinstance(self.length_buckets, int) or self.length_buckets < 0:
            from recbole_diffusion.utils import RecBoleDiffusionError

            raise RecBoleDiffusionError(f"Invalid length_buckets={self.length_buckets!r} for {type(self).__name__}: "
                                        f"must be a whole number >= 0 (0 = RecBole's own path, no cutting).")

    def _buckets(self, interaction):
        lengths = interaction[self.ITEM_SEQ_LEN]
        order = torch.argsort(lengths)
        full = interaction[self.ITEM_SEQ].shape[1]
        suffix = self.ITEM_SEQ[len(self.ITEM_ID):]  # RecBole's LIST_SUFFIX
        for rows in order.tensor_split(min(self.length_buckets, order.shape[0])):
            if rows.numel() == 0:
                continue
            part = interaction[rows]
            width = int(lengths[rows].max())
            for key, value in part.interaction.items():
                # every per-position list field (item_id_list, timestamp_list, Mask_item_id_list, ...) is cut the
                # same way; BERT4Rec's per-mask fields (MASK_INDEX, Pos_/Neg_item_id) are not positions
                if key.endswith(suffix) and value.dim() >= 2 and value.shape[1] == full:
                    part.interaction[key] = value[:, :width]
            yield rows, part

    def calculate_loss(self, interaction):
        if not self.length_buckets:
            return super().calculate_loss(interaction)
        if self._loss_terms is None:
            terms = torch.ones(len(interaction), device=interaction[self.ITEM_SEQ].device)
        else:
            terms = (interaction[self._loss_terms] > 0).sum(dim=1).float()
        total = terms.sum()
        if total == 0:  # no loss term at all: RecBole's own result (0/0), whatever it is
            return super().calculate_loss(interaction)
        loss = 0.0
        for rows, part in self._buckets(interaction):
            share = terms[rows].sum() / total
            if share > 0:  # a group without terms has a 0/0 mean of its own; it adds nothing to the batch's
                loss = loss + self._group_loss(part) * share
        return loss

    def _group_loss(self, part):
        if type(self).__name__ == "BERT4Rec" and self.loss_type == "CE":
            return self._bert4rec_masked_ce(part)
        return super(LengthBucketedMixin, self).calculate_loss(part)

    def _bert4rec_masked_ce(self, part):
        """RecBole's BERT4Rec CE loss, scoring only the mask slots that hold a target. RecBole scores all 12,101
        items for each of the ``mask_ratio * MAX_ITEM_LIST_LENGTH`` slots of every row and then multiplies the
        padding slots' losses by 0; here those slots are never scored. The same terms, the same mean (slots with
        ``MASK_INDEX > 0``, RecBole's rule, which also ignores a mask at position 0)."""
        masked_index = part[self.MASK_INDEX]
        seq_output = self.forward(part[self.MASK_ITEM_SEQ])  # [B L H]
        rows, slots = torch.nonzero(masked_index > 0, as_tuple=True)
        hidden = seq_output[rows, masked_index[rows, slots]]  # [targets H]
        logits = hidden @ self.item_embedding.weight[: self.n_items].t() + self.output_bias
        return torch.nn.functional.cross_entropy(logits, part[self.POS_ITEMS][rows, slots])

    def _gather(self, interaction, method):
        if not self.length_buckets:
            return getattr(super(LengthBucketedMixin, self), method)(interaction)
        out = None
        for rows, part in self._buckets(interaction):
            result = getattr(super(LengthBucketedMixin, self), method)(part)
            if out is None:
                out = result.new_empty((len(interaction), *result.shape[1:]))
            out[rows] = result
        return out

    def predict(self, interaction):
        return self._gather(interaction, "predict")

    def full_sort_predict(self, interaction):
        return self._gather(interaction, "full_sort_predict")
