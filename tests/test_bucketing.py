"""Length buckets for RecBole's baselines are exact: same scores in eval mode, same loss with dropout off."""

import pytest
import torch

from recbole_diffusion.config import Config
from recbole_diffusion.quick_start import build


@pytest.mark.parametrize("model", ["SASRec", "GRU4Rec", "BERT4Rec"])
@pytest.mark.parametrize("loss_type", ["CE", "BPR"])
def test_bucketed_baselines_equal_recbole(model, loss_type, toy_config):
    config = Config(model=model, config_dict=dict(toy_config, loss_type=loss_type, length_buckets=3,
                                                  MAX_ITEM_LIST_LENGTH=20))
    _, train_data, _, test_data, net, _ = build(config)
    assert type(net).__name__ == model and net._length_bucketed
    base = type(net).__mro__[2]  # RecBole's own class, under the mixin
    assert base.__name__ == model and not getattr(base, "_length_bucketed", False)
    net.eval()
    batch = next(iter(test_data))[0]
    train_batch = next(iter(train_data))
    assert int(batch["item_length"].max()) < batch["item_id_list"].shape[1]  # there is padding to cut
    if model == "BERT4Rec":  # its loss averages over masked positions, which differ in number between rows
        terms = (train_batch["MASK_INDEX"] > 0).sum(dim=1)
        assert terms.sum() > 0 and terms.min() < terms.max()
        assert int(train_batch["item_length"].max()) < train_batch["Mask_item_id_list"].shape[1]
    with torch.no_grad():
        assert torch.allclose(net.full_sort_predict(batch), base.full_sort_predict(net, batch), atol=1e-5)
        assert torch.allclose(net.calculate_loss(train_batch), base.calculate_loss(net, train_batch), atol=1e-5)
        if loss_type == "BPR":
            assert torch.allclose(net.predict(train_batch), base.predict(net, train_batch), atol=1e-5)


def test_models_without_exact_bucketing_keep_recboles_path(toy_config):
    config = Config(model="Caser", config_dict=toy_config)
    assert not getattr(config.model_class, "_length_bucketed", False)
