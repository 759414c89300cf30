"""The shared layers' CPU dropout: the rate, the scaling, the gradient and the seed behave as nn.Dropout's."""

import pytest
import torch
from torch import nn

from recbole_diffusion.model.layers import Dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_cpu_dropout_rate_and_scale(p):
    torch.manual_seed(0)
    x = torch.full((1000, 1001), 3.0)  # odd numel: the last 64-bit draw is only partly used
    out = Dropout(p).train()(x)
    dropped = out == 0
    kept_value = 3.0 * 65536 / (65536 - round(p * 65536))
    assert torch.allclose(out[~dropped], torch.tensor(kept_value))
    # 1,001,000 Bernoulli(p) draws: the share dropped is within 5 standard deviations of p
    assert abs(dropped.float().mean().item() - p) < 5 * (p * (1 - p) / x.numel()) ** 0.5
    assert abs(out.mean().item() - 3.0) < 0.01  # unbiased, as nn.Dropout


def test_cpu_dropout_masks_are_independent_across_positions():
    torch.manual_seed(0)
    out = Dropout(0.5).train()(torch.ones(400_000, 4))
    kept = (out != 0).float()
    # the four elements of one 64-bit draw are independent: pairwise correlations near 0
    corr = torch.corrcoef(kept.T)
    assert (corr - torch.eye(4)).abs().max() < 0.01
    assert (kept.mean(0) - 0.5).abs().max() < 0.005


def test_cpu_dropout_gradient_is_the_mask():
    torch.manual_seed(1)
    x = torch.randn(64, 32, requires_grad=True)
    out = Dropout(0.3).train()(x)
    out.sum().backward()
    scale = 65536 / (65536 - round(0.3 * 65536))
    assert torch.allclose(x.grad, (out != 0).float() * scale)


def test_cpu_dropout_follows_the_seed_and_eval_is_identity():
    layer = Dropout(0.2).train()
    x = torch.randn(8, 5, 16)
    torch.manual_seed(3)
    first = layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), first)
    assert not torch.equal(layer(x), first)
    assert torch.equal(layer.eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert isinstance(layer, nn.Dropout)  # state dicts and module checks see a dropout
