"""Shared fixtures: a tiny dataset written by the tests, tiny model sizes, and a scratch working directory
(RecBole writes saved/, log/ and log_tensorboard/ relative to the current directory)."""

import os
import sys

import pytest
import torch

torch.set_num_threads(1)
# Current Ray turns token authentication on for the first local cluster a process starts and keeps that for the
# process: the cluster tests (tests/test_cluster.py) join nodes started without it. Every Ray here is loopback only.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

N_ITEMS = 30


def write_inter_file(root, name, user_items):
    """``<root>/<name>/<name>.inter`` from {user token: [item tokens in time order]}; timestamp = position."""
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.inter"), "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, items in user_items.items():
            for pos, item in enumerate(items):
                f.write(f"{user}\t{item}\t{pos + 1}\n")
    return root


def write_toy_dataset(root, name="toy", n_users=80, seed=0):
    """Users walk the item ring: s, s+1, s+2, ... (mod N_ITEMS), 6 to 12 steps. The next item is always the
    last one plus one, so any sequential model that learns anything gets a falling loss and a high Hit@5."""
    import random

    rng = random.Random(seed)
    walks = {}
    for user in range(1, n_users + 1):
        start, length = rng.randrange(N_ITEMS), rng.randint(6, 12)
        walks[f"u{user}"] = [f"i{(start + pos) % N_ITEMS + 1}" for pos in range(length)]
    return write_inter_file(root, name, walks)


TINY = {
    "dataset": "toy",
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    "hidden_size": 16,
    "inner_size": 32,
    "n_layers": 1,
    "n_heads": 1,
    "MAX_ITEM_LIST_LENGTH": 10,
    "train_batch_size": 64,
    "eval_batch_size": 256,
    "epochs": 1,
    "state": "ERROR",
    "show_progress": False,
    "use_gpu": False,
    "seed": 2020,
}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # RecBole's Config reads every --key=value of sys.argv: keep pytest's own arguments out of it.
    monkeypatch.setattr(sys, "argv", ["pytest"])
    return tmp_path


@pytest.fixture
def toy_config(workdir):
    """config_dict for the toy dataset, tiny sizes, 1 epoch, checkpoints under the scratch directory."""
    data_root = write_toy_dataset(str(workdir / "data"))
    return dict(TINY, data_path=data_root, checkpoint_dir=str(workdir / "saved"))
