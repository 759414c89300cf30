"""Shared measuring code for the benchmark scripts: machine speed, one timed training run, result files.

Every figure a script prints is measured in that run, side by side, on this machine; ratios are what the
targets are about, since the machine's absolute speed drifts.
"""

import datetime
import os
import platform
import sys
import time

import torch
import yaml

from recbole_diffusion.compare import count_parameters, record_epoch_times, timed_evaluate

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED_DATA = os.path.abspath(os.path.join(HERE, "..", "..", "shared", "datasets"))


def matmul_gflops(m=4096, k=64, n=12102, repeats=20):
    """GFLOP/s of a [m,k] @ [k,n] float32 matmul, the shape of scoring a batch against all Beauty items."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * m * k * n * repeats / (time.perf_counter() - start) / 1e9


def machine():
    return (f"{platform.node()} · {platform.processor() or platform.machine()} · {os.cpu_count()} cores · "
            f"torch {torch.__version__} · {torch.get_num_threads()} threads")


def timed_run(model, dataset, epochs, config_dict, evaluate=True):
    """Train ``model`` for ``epochs`` epochs (no early stopping, last model kept) and test it.

    Returns a dict: seconds per training epoch, test metrics, inference ms per user, parameter count, and the
    trainer/test loader for further measurements.
    """
    from recbole.utils import init_logger, init_seed

    from recbole_diffusion.config import Config
    from recbole_diffusion.quick_start import build

    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from argv: ours are not config keys
    config = Config(model=model, dataset=dataset, config_dict=dict(
        config_dict, epochs=epochs, state="ERROR", show_progress=False, eval_step=10**6, stopping_step=10**6))
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    _, train_data, _, test_data, net, trainer = build(config)
    epoch_seconds = record_epoch_times(trainer)
    for epoch in range(epochs):
        trainer._train_epoch(train_data, epoch, show_progress=False)
    out = {
        "model": model,
        "dataset": dataset,
        "sec_per_epoch": sum(epoch_seconds) / len(epoch_seconds),
        "train_samples": len(train_data.dataset),
        "params": count_parameters(net),
        "trainer": trainer,
        "train_data": train_data,
        "test_data": test_data,
        "config": config,
    }
    if evaluate:
        out.update(evaluate_timed(trainer, test_data))
    return out


def evaluate_timed(trainer, test_data):
    """Full-ranking test metrics and inference milliseconds per user."""
    result, ms_per_user = timed_evaluate(trainer, test_data)
    return {"test": dict(result), "infer_ms_per_user": ms_per_user}


def key_values(pairs):
    """['aug_epochs=500', ...] (a script's repeated --set/--aug) -> {'aug_epochs': 500, ...}, values read as yaml
    (numbers, lists, booleans)."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def write_result(name, lines, tag="", quiet=False):
    """Print ``lines`` (unless ``quiet``) and keep them in benchmarks/results/<name>[_<tag>].md with the date and
    the machine."""
    name = f"{name}_{tag}" if tag else name
    text = "\n".join([f"# {name}", "", f"Run {datetime.datetime.now():%Y-%m-%d %H:%M} on {machine()}.",
                      f"Command: `python {' '.join(sys.argv)}`", "", *lines, ""])
    if not quiet:
        print(text)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", f"{name}.md"), "w") as f:
        f.write(text)
