"""The shared layers' CPU dropout against torch's, side by side in one run.

    python benchmarks/dropout_speed.py [--batch 512] [--length 20] [--hidden 128] [--repeats 10]

Two measurements, each alternating the two implementations so that both see the same machine load: the dropout
op alone on DiffuRec's largest dropout input (the FFN's inner activation, [batch, length, 4 x hidden]), and one
training step (forward and backward) of DiffuRec's 4-block pre-LN Transformer at the leaderboard's size, where
torch's per-element mask was 30% of a profiled epoch. One thread.
"""

import argparse
import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_result  # noqa: E402


def seconds(fn, repeats):
    """Median wall time of ``fn`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from recbole_diffusion.model import layers

    ours = layers.Dropout.forward
    theirs = nn.Dropout.forward
    B, L, H = args.batch, args.length, args.hidden
    inner = torch.randn(B, L, 4 * H)
    encoder = layers.TransformerEncoder(4, 2, H, 4 * H, 0.1, 0.1).train()
    x = torch.randn(B, L, H, requires_grad=True)
    seq = torch.ones(B, L, dtype=torch.long)
    last = torch.full((B,), L - 1)
    dropout = layers.Dropout(0.1).train()

    def step():
        encoder(x, seq, last).sum().backward()

    results = {}
    for name, forward in [("torch", theirs), ("ours", ours), ("torch", theirs), ("ours", ours)]:
        layers.Dropout.forward = forward
        results.setdefault(name, []).append((seconds(lambda: dropout(inner), args.repeats),
                                             seconds(step, args.repeats)))
    layers.Dropout.forward = ours
    op = {name: statistics.mean(r[0] for r in runs) for name, runs in results.items()}
    train = {name: statistics.mean(r[1] for r in runs) for name, runs in results.items()}

    lines = [
        f"Dropout p = 0.1, one thread; the median of {args.repeats} calls, each implementation measured twice, "
        "alternating, and averaged. *op*: the dropout of one [batch, length, 4 x hidden] tensor (DiffuRec's FFN "
        "inner activation); *step*: forward and backward of a 4-block pre-LN Transformer (hidden "
        f"{H}, FFN {4 * H}, 2 heads; the leaderboard's DiffuRec size) on [batch {B}, length {L}], every dropout "
        "of the blocks the measured one.",
        "",
        "| measurement | torch's mask (ms) | ours (ms) | torch / ours |",
        "|---|---:|---:|---:|",
        f"| op: dropout of [{B}, {L}, {4 * H}] | {op['torch'] * 1e3:.1f} | {op['ours'] * 1e3:.1f} | "
        f"**{op['torch'] / op['ours']:.2f}x** |",
        f"| step: 4-block Transformer, forward + backward | {train['torch'] * 1e3:.1f} | {train['ours'] * 1e3:.1f} | "
        f"**{train['torch'] / train['ours']:.2f}x** |",
    ]
    write_result("dropout_speed", lines)


if __name__ == "__main__":
    main()
