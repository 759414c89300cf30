"""The Sequential U-Net (SU-Net) of DiffuASR (Liu et al., CIKM 2023, section 3.3).

M item embeddings of size d are M channels of a sqrt(d) x sqrt(d) image: the convolutions mix the items of the
sequence across channels, as a DDPM U-Net mixes colours. The network is Ho et al.'s (2020) U-Net, small:
ResBlocks with GroupNorm(8), a step embedding added in every ResBlock, down- and up-sampling, one self-attention
block in the middle. The guidance vector is projected like the step embedding and added to it.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from recbole_diffusion.model.layers import TimestepMLP

NORM_GROUPS = 8  # GroupNorm groups of the DDPM U-Net (and of the official SU-Net)


def group_norm(channels):
    return nn.GroupNorm(NORM_GROUPS, channels, eps=1e-6)


def unet_resolutions(side, levels):
    """Spatial sides [side, ...] of the ``levels`` resolution levels (a stride-2 convolution halves, rounding down)."""
    sides = [side]
    for _ in range(levels - 1):
        sides.append(sides[-1] // 2)
    return sides


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> Conv3x3, plus the projected step embedding, -> GroupNorm -> SiLU -> Dropout -> Conv3x3,
    with a residual (1x1 convolution when the channel count changes)."""

    def __init__(self, in_channels, out_channels, embedding_channels, dropout):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embedding_projection = nn.Linear(embedding_channels, out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x, embedding):
        """x [B, C_in, S, S], embedding [B, E] -> [B, C_out, S, S]."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.embedding_projection(F.silu(embedding))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x) + h


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over the S x S positions, with a residual (the DDPM U-Net's middle block)."""

    def __init__(self, channels):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).transpose(-1, -2).unbind(1)  # each [B, HW, C]
        h = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(h.transpose(1, 2).reshape(B, C, H, W))


class Downsample(nn.Module):
    """Stride-2 3x3 convolution, padded on the right and bottom only (the DDPM U-Net's choice): S -> S // 2."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to the side of the matching skip connection, then a 3x3 convolution.
    Resizing to the skip's side instead of doubling lets sides that are not powers of two (6 x 6) round-trip."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, side):
        return self.conv(F.interpolate(x, size=(side, side), mode="nearest"))


class SequentialUNet(nn.Module):
    r"""epsilon_theta(x_t, t, g): the noise in M noisy item embeddings, given the step and the guidance vector.

    Args:
        num_items (int): M, the number of item embeddings in x_t (the U-Net's input and output channels).
        hidden_size (int): d, a perfect square: each embedding becomes a sqrt(d) x sqrt(d) image.
        channels (int): channels of the first level (the official ``ch``: 8); a multiple of 8 for GroupNorm.
        channel_mult (list of int): channel multiplier of each level; one level fewer downsamplings
            (official: [1, 2, 2, 2], so 8 x 8 -> 4 -> 2 -> 1).
        num_res_blocks (int): ResBlocks per level on the way down (one more on the way up). Official: 2.
        dropout (float): dropout inside each ResBlock. Official: 0.1.
    """

    def __init__(self, num_items, hidden_size, channels=8, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
                 dropout=0.1):
        super().__init__()
        self.side = math.isqrt(hidden_size)
        self.sides = unet_resolutions(self.side, len(channel_mult))
        embedding_channels = 4 * channels

        # step embedding: sinusoid -> Linear -> SiLU -> Linear; the guidance gets its own MLP and is added to it
        self.time_embedding = TimestepMLP(embedding_channels, embedding_channels)
        self.guidance_projection = nn.Sequential(
            nn.Linear(hidden_size, embedding_channels), nn.SiLU(), nn.Linear(embedding_channels, embedding_channels)
        )

        self.conv_in = nn.Conv2d(num_items, channels, 3, padding=1)
        skip_channels = [channels]
        current = channels
        self.down_blocks, self.downsamples = nn.ModuleList(), nn.ModuleList()
        for level, mult in enumerate(channel_mult):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(current, channels * mult, embedding_channels, dropout))
                current = channels * mult
                skip_channels.append(current)
            self.down_blocks.append(blocks)
            if level < len(channel_mult) - 1:
                self.downsamples.append(Downsample(current))
                skip_channels.append(current)

        self.mid_block1 = ResBlock(current, current, embedding_channels, dropout)
        self.mid_attention = SpatialSelfAttention(current)
        self.mid_block2 = ResBlock(current, current, embedding_channels, dropout)

        self.up_blocks, self.upsamples = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(channel_mult))):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(ResBlock(current + skip_channels.pop(), channels * channel_mult[level],
                                       embedding_channels, dropout))
                current = channels * channel_mult[level]
            self.up_blocks.append(blocks)
            if level > 0:
                self.upsamples.append(Upsample(current))

        self.norm_out = group_norm(current)
        self.conv_out = nn.Conv2d(current, num_items, 3, padding=1)

    def forward(self, x_t, timesteps, guidance):
        """x_t [B, M, d], timesteps [B] (the values to embed), guidance [B, d] -> predicted noise [B, M, d]."""
        embedding = self.time_embedding(timesteps) + self.guidance_projection(guidance)
        h = self.conv_in(x_t.reshape(x_t.shape[0], x_t.shape[1], self.side, self.side))
        skips = [h]
        for level, blocks in enumerate(self.down_blocks):
            for block in blocks:
                h = block(h, embedding)
                skips.append(h)
            if level < len(self.downsamples):
                h = self.downsamples[level](h)
                skips.append(h)

        h = self.mid_block2(self.mid_attention(self.mid_block1(h, embedding)), embedding)

        for i, blocks in enumerate(self.up_blocks):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), embedding)
            if i < len(self.upsamples):
                h = self.upsamples[i](h, self.sides[len(self.sides) - 2 - i])

        h = self.conv_out(F.silu(self.norm_out(h)))
        return h.reshape(x_t.shape)
