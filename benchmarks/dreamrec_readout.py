"""What DreamRec's read-out can rank before its item table has learned any structure.

    python benchmarks/dreamrec_readout.py [--dataset beauty5k] [--widths 64,256,1024,3072]

DreamRec regresses x0 on the target's embedding with an MSE, so its best possible prediction is the conditional
mean E[e_next | h] = sum_i p(i | h) e_i, and it ranks items by the inner product of that vector with every row of
the table. This script feeds two exact conditionals into that read-out on a random N(0, 1) table (DreamRec's init)
of several widths and ranks the validation split (full ranking, padding excluded): the training popularity, and
a first-order Markov chain on the last item mixed half and half with popularity. Scoring the same p directly is
the reference: the gap is what the crosstalk between random rows costs, whatever the denoiser learns.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import SHARED_DATA, write_result  # noqa: E402


def ndcg_at_10(scores, target):
    """Mean NDCG@10 of one target per row under full ranking (ties counted in the target's favour)."""
    scores = scores.clone()
    scores[:, 0] = float("-inf")
    rank = (scores > scores.gather(1, target[:, None])).sum(1)
    return torch.where(rank < 10, 1 / torch.log2(rank.float() + 2), torch.zeros(())).mean().item()


def last_items(interaction):
    return interaction["item_id_list"].gather(1, (interaction["item_length"] - 1)[:, None]).squeeze(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="beauty5k")
    parser.add_argument("--data_path", default=SHARED_DATA)
    parser.add_argument("--widths", default="64,256,1024,3072")
    args = parser.parse_args()

    from recbole.data import create_dataset, data_preparation

    from recbole_diffusion.config import Config

    config = Config(model="DreamRec", dataset=args.dataset, config_dict={
        "data_path": args.data_path, "state": "ERROR", "show_progress": False})
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    n_items = dataset.item_num

    train = train_data.dataset.inter_feat
    popularity = torch.bincount(train["item_id"], minlength=n_items).float()
    popularity[0] = 0
    popularity /= popularity.sum()
    transitions = torch.zeros(n_items, n_items)
    transitions.index_put_((last_items(train), train["item_id"]), torch.ones(len(train)), accumulate=True)

    valid = [batch[0] for batch in valid_data]
    target = torch.cat([batch["item_id"] for batch in valid])
    last = torch.cat([last_items(batch) for batch in valid])
    p_pop = popularity[None].expand(len(target), -1)
    rows = transitions[last]
    p_markov = 0.5 * rows / rows.sum(1, keepdim=True).clamp(min=1) + 0.5 * p_pop
    conditionals = {"popularity": p_pop, "Markov + popularity": p_markov}

    widths = [int(w) for w in args.widths.split(",")]
    generator = torch.Generator().manual_seed(0)
    cells = {name: [] for name in conditionals}
    for width in widths:
        table = torch.randn(n_items, width, generator=generator)
        for name, p in conditionals.items():
            cells[name].append(ndcg_at_10((p @ table) @ table.t(), target))

    lines = [
        f"DreamRec's MSE-optimal read-out on {args.dataset} ({n_items - 1} items, {len(target)} validation users): "
        "valid NDCG@10 of x = sum_i p(i | h) e_i scored by inner product with a random N(0, 1) table e of each "
        "width (one table per width, seed 0), against p scored directly. The p are exact, computed from the "
        "training split: a trained DreamRec can at best reach these with an unlearned table.",
        "",
        "| p(i \\| h) | scored directly | " + " | ".join(f"read-out, width {w}" for w in widths) + " |",
        "|---|---:|" + "---:|" * len(widths),
    ]
    for name, p in conditionals.items():
        lines.append(f"| {name} | {ndcg_at_10(p, target):.4f} | "
                     + " | ".join(f"{v:.4f}" for v in cells[name]) + " |")
    write_result("dreamrec_readout", lines, tag=args.dataset)


if __name__ == "__main__":
    main()
