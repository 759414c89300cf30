"""The report of a sweep (see :mod:`recbole_diffusion.tune`): ``trials.csv`` and ``trials.md`` (every trial, sorted
by the validation metric, with the nodes it ran on and its failures), ``best.yaml`` and ``valid_curves.png``."""

import csv
import io
import os

import yaml

from recbole_diffusion.utils import write_atomic, write_text

def _error_line(error):
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(error).__name__


def _plain_value(value):
    return value.item() if hasattr(value, "item") else value


def _placement(frame):
    """The nodes a trial reported from, in order (8 characters of Ray's node id each), and the GPU ids Ray gave it
    with the device it trained on, e.g. ``1 (cuda)``, or ``1 (cpu)`` on a node without CUDA."""
    nodes, gpus = [], []
    if frame is None or "node_id" not in frame:
        return "", ""
    for _, report in frame.iterrows():
        node, gpu_ids = report.get("node_id"), report.get("gpu_ids")
        for seen, value in ((nodes, node), (gpus, gpu_ids)):
            if isinstance(value, (int, float)) and value == value:  # one GPU id read back as a number
                value = str(int(value))
            if not isinstance(value, str) or not value:  # NaN: a report without the column
                continue
            value = value[:8] if seen is nodes else f"{value} ({str(report.get('device', '')).split(':')[0]})"
            if not seen or seen[-1] != value:
                seen.append(value)
    return " > ".join(nodes), " > ".join(gpus)


def _trial_row(result, saved, space, metric, mode, metric_names):
    """One table row (a dict) from a Ray ``Result`` and the trial's saved (status, failures): config, best epoch,
    valid and test metrics, status, the nodes it ran on and how often it failed."""
    trial_status, failures = saved or (None, 0)
    last = result.metrics or {}
    frame = result.metrics_dataframe
    epochs, per_epoch = [], None
    if frame is not None and metric in frame and "final" in frame:
        # a trial resumed from a checkpoint older than its last report repeats those epochs: the later row wins
        per_epoch = frame[frame["final"].astype(str) != "True"].drop_duplicates("epoch", keep="last")
        epochs = [(int(e), float(v)) for e, v in zip(per_epoch["epoch"], per_epoch[metric]) if v == v]
    row = {"trial": os.path.basename(result.path).replace("trial_", ""), "status": None}
    row.update({name: _plain_value((result.config or {}).get(name)) for name in space})  # None: never started
    if last.get("final"):
        status, valid = "completed", {k: last.get(k) for k in metric_names}
        test = {k: last.get(f"test_{k}") for k in metric_names}
        best_epoch = last.get("best_epoch")
    else:
        status, test = "stopped early", {}
        best_epoch, valid = None, {}
        if epochs:
            pick = max if mode == "max" else min
            best_epoch = pick(epochs, key=lambda ev: ev[1])[0]
            best_row = per_epoch[per_epoch["epoch"] == best_epoch].iloc[0]
            valid = {k: _plain_value(best_row.get(k)) for k in metric_names}
    if result.error is not None:
        status = f"failed: {_error_line(result.error)}"
    elif trial_status in ("RUNNING", "PENDING", "PAUSED"):
        status = "unfinished"
    nodes, gpus = _placement(frame)
    row.update({"status": status, "best_epoch": best_epoch, "epochs": len(epochs), "failures": failures,
                "nodes": nodes or None, "gpus": gpus or None})
    row.update({f"valid {k}": valid.get(k) for k in metric_names})
    row.update({f"test {k}": test.get(k) for k in metric_names})
    return row, epochs


def _sort_key(metric, mode):
    def key(row):
        value = row.get(f"valid {metric}")
        if value is None or value != value:
            return (1, 0.0)
        return (0, -value if mode == "max" else value)

    return key


def _cell(value, metric=True):
    """Markdown text of a table cell: metrics with 4 decimals, configuration values with 4 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if metric else f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _write_table(rows, space, csv_path, md_path):
    columns = list(rows[0])
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    write_text(csv_path, buffer.getvalue(), newline="")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c], metric=c not in space) for c in columns) + " |" for row in rows]
    write_text(md_path, "\n".join(lines) + "\n")
    return "\n".join(lines)


def _write_best_yaml(best, space, path, model, dataset, metric, total):
    config = {name: best[name] for name in space}
    test = best.get(f"test {metric}")
    header = [
        f"# Best of {total} trials of {model} on {dataset}: valid {metric} = {_cell(best[f'valid {metric}'])} "
        f"at epoch {best['best_epoch']}" + (f", test {metric} = {_cell(test)}" if test is not None else "") + ".",
        "# Only the tuned keys. Train with them:",
        f"#   python run_recbole_diffusion.py --model={model} --dataset={dataset} --config_files={path}",
    ]
    write_text(path, "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False, default_flow_style=False))
    return config


def _plot_curves(curves, path, model, dataset, metric):
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    styles = {"completed": "-", "stopped early": "--", "unfinished": ":"}
    for label, status, epochs in curves:
        if not epochs:
            continue
        xs, ys = zip(*epochs)
        ax.plot(xs, ys, styles.get(status, ":"), marker="o" if len(xs) < 30 else None, markersize=3,
                label=f"{label} ({status.split(':')[0]})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"valid {metric}")
    ax.set_title(f"{model} on {dataset}: valid {metric} per epoch, one line per trial")
    ax.grid(alpha=0.3)
    if 0 < len(curves) <= 20:
        ax.legend(fontsize=7)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))


def saved_trials(output_dir):
    """The trials (Ray ``Trial`` objects) in the sweep's saved state at ``output_dir``."""
    import logging

    from ray.tune import ExperimentAnalysis

    quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # it warns about every trial that failed before its first report
    try:
        return ExperimentAnalysis(output_dir).trials
    finally:
        quiet.setLevel(level)


def _saved_statuses(output_dir):
    """Trial id -> (status, failures) in the sweep's saved state. After an interruption (Ctrl-C) the trials that were
    running are TERMINATED in the ResultGrid but PENDING on disk, which is what ``--resume`` continues."""
    return {trial.trial_id: (trial.status, trial.num_failures) for trial in saved_trials(output_dir)}


def report_sweep(grid, space, model, dataset, metric, mode, metric_names, output_dir):
    """Write trials.csv, trials.md, best.yaml and valid_curves.png for a finished (or interrupted) sweep."""
    statuses = _saved_statuses(output_dir)
    rows, curves = [], []
    for result in grid:
        trial_id = os.path.basename(result.path).replace("trial_", "")
        row, epochs = _trial_row(result, statuses.get(trial_id), space, metric, mode, metric_names)
        rows.append(row)
        curves.append((row["trial"], row["status"], epochs))
    rows.sort(key=_sort_key(metric, mode))
    if not any(row["gpus"] for row in rows):
        for row in rows:
            del row["gpus"]
    files = {name: os.path.join(output_dir, name) for name in ("trials.csv", "trials.md", "best.yaml",
                                                                 "valid_curves.png")}
    table = _write_table(rows, space, files["trials.csv"], files["trials.md"])
    _plot_curves(curves, files["valid_curves.png"], model, dataset, metric)
    ranked = [row for row in rows if row.get(f"valid {metric}") is not None and not row["status"].startswith("fail")]
    best_config = None
    if ranked:
        best_config = _write_best_yaml(ranked[0], space, files["best.yaml"], model, dataset, metric, len(rows))
    else:
        files.pop("best.yaml")
    unfinished = sum(row["status"] == "unfinished" for row in rows)
    failed = sum(row["status"].startswith("failed") for row in rows)
    print(f"\nSweep of {model} on {dataset}: {len(rows)} trials, {failed} failed, {unfinished} unfinished; "
          f"sorted by valid {metric} ({mode}).")
    print(table)
    if best_config is not None:
        print(f"best config: {best_config}")
    if unfinished:
        print(f"The sweep was interrupted: continue it with --resume --output_dir={output_dir}")
    for path in files.values():
        print(f"wrote {path}")
    return {"rows": rows, "best_config": best_config, "output_dir": output_dir, "files": files,
            "unfinished": unfinished}
