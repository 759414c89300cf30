"""The side-by-side comparison: files, table = runs, resume, one shared dataset, best-epoch testing, bad input."""

import csv
import json
import os
import socket
import statistics
import subprocess
import sys

import pytest
import torch
import yaml
from PIL import Image
from test_cli import cli

from recbole_diffusion import compare as compare_module
from recbole_diffusion import run_recbole_diffusion
from recbole_diffusion.compare import compare
from recbole_diffusion.trainer import load_checkpoint

METRICS = ["hit@5", "hit@10", "hit@20", "ndcg@5", "ndcg@10", "ndcg@20"]
FAST_DIFFUREC = {"sampler": "ddim", "sampling_steps": 2}  # 2 reverse steps: the toy test evaluation in a blink


@pytest.fixture
def counted(monkeypatch):
    """Counts of dataset creations and of trained runs inside compare.py."""
    counts = {"datasets": 0, "runs": 0}
    create, train = compare_module.create_dataset, compare_module.train_and_test

    def create_dataset(config):
        counts["datasets"] += 1
        return create(config)

    def train_and_test(*args, **kwargs):
        counts["runs"] += 1
        return train(*args, **kwargs)

    monkeypatch.setattr(compare_module, "create_dataset", create_dataset)
    monkeypatch.setattr(compare_module, "train_and_test", train_and_test)
    return counts


def _lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _md_row(md_text, model):
    row = next(line for line in md_text.splitlines() if line.startswith(f"| {model} |"))
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_two_models_two_seeds_table_equals_runs_and_resumes(workdir, toy_config, counted, monkeypatch, capsys):
    config = dict(toy_config, **FAST_DIFFUREC)
    result = compare(["DiffuRec", "SASRec"], "toy", seeds=2, config_dict=config, output_dir="out",
                     popularity_floor=False)
    files = result["files"]
    assert result["trained"] == 4 and result["resumed"] == 0
    assert counted == {"datasets": 1, "runs": 4}  # one dataset for both models and both seeds

    runs = _lines(files["runs.jsonl"])
    assert [(r["model"], r["seed"]) for r in runs] == [("DiffuRec", 2020), ("SASRec", 2020),
                                                      ("DiffuRec", 2021), ("SASRec", 2021)]
    assert runs == result["runs"]
    assert [r["kind"] for r in runs[:2]] == ["diffusion", "baseline"]
    for run in runs:
        assert list(run["test"]) == METRICS and run["epochs_trained"] == 1 and run["best_epoch"] == 1
        assert run["sec_per_epoch"] > 0 and run["infer_ms_per_user"] > 0 and run["test_users"] == 80
    # the two seeds really differ
    assert runs[0]["test"] != runs[2]["test"] or runs[1]["test"] != runs[3]["test"]

    with open(files["comparison.csv"]) as f:
        table = {row["model"]: row for row in csv.DictReader(f)}
    with open(files["comparison.md"]) as f:
        md = f.read()
    header = _md_row(md, "model")
    for model in ("DiffuRec", "SASRec"):
        mine = [r for r in runs if r["model"] == model]
        md_cells = dict(zip(header, _md_row(md, model)))
        assert table[model]["seeds"] == "2020 2021" and md_cells["seeds"] == "2"
        for metric in METRICS:
            values = [r["test"][metric] for r in mine]
            mean, std = statistics.mean(values), statistics.stdev(values)
            assert float(table[model][f"{metric}_mean"]) == mean
            assert float(table[model][f"{metric}_std"]) == std
            assert md_cells[metric].strip("*") == f"{mean:.4f} ± {std:.4f}"
        assert float(table[model]["sec_per_epoch_mean"]) == statistics.mean(
            statistics.median(r["epoch_seconds"]) for r in mine)  # each run's median epoch: robust to load
        assert float(table[model]["infer_ms_per_user_mean"]) == statistics.mean(r["infer_ms_per_user"] for r in mine)
        assert float(table[model]["params_mean"]) == mine[0]["params"] == mine[1]["params"]
        # times to 3 significant figures, trailing zeros kept (2.00, not 2)
        shown = md_cells["infer ms/user"].strip("*").split(" ± ")[0]
        assert len(shown.replace(".", "").lstrip("0")) == 3 or float(shown) >= 100
    # the best mean of each metric column is bold, and only that one
    for metric in METRICS:
        means = {m: float(table[m][f"{metric}_mean"]) for m in table}
        for model in table:
            bold = dict(zip(header, _md_row(md, model)))[metric].startswith("**")
            assert bold == (f"{means[model]:.4f}" == f"{max(means.values()):.4f}")
    assert "paired over seeds 2020, 2021" in md and "ttest_rel" in md and "4 of 4 runs finished" in md
    assert result["significance"]["diffusion"] == "DiffuRec" and result["significance"]["baseline"] == "SASRec"

    with Image.open(files["comparison.png"]) as image:
        image.verify()
        assert image.size[0] > 0 and image.size[1] > 0

    # The same comparison again, through the command line: everything is read back, nothing trained.
    code, out, err = cli(monkeypatch, capsys, config, "--compare=DiffuRec,SASRec", "--seeds=2", "--output_dir=out",
                         "--popularity_floor=False")
    assert code == 0, err
    assert "resuming: 4 of 4 runs" in out and "| SASRec | baseline | 2 |" in out
    assert counted["runs"] == 4 and counted["datasets"] == 1
    assert _lines(files["runs.jsonl"]) == runs
    monkeypatch.setattr(sys, "argv", ["pytest"])  # RecBole's Config would keep reading the CLI's --key=value

    # One more seed: only the two new (model, seed) runs are trained, the table covers all six.
    result = compare(["DiffuRec", "SASRec"], "toy", seeds=3, config_dict=config, output_dir="out",
                     popularity_floor=False)
    assert result["trained"] == 2 and result["resumed"] == 4 and counted["runs"] == 6
    assert len(_lines(files["runs.jsonl"])) == 6
    assert [row["seeds"] for row in result["summary"]] == [[2020, 2021, 2022]] * 2

    # A changed setting is a new run, not a resumed one.
    result = compare(["SASRec"], "toy", seeds=1, config_dict=dict(config, hidden_size=8), output_dir="out",
                     popularity_floor=False)
    assert result["trained"] == 1 and result["runs"][0]["params"] < runs[1]["params"]


def test_shared_dataset_and_best_epoch_equal_a_standalone_run(workdir, toy_config, counted, tmp_path):
    """SASRec on the dataset created for DiffuRec, tested at its best-validation epoch (kept in memory), gives
    exactly the metrics of a standalone run_recbole_diffusion with RecBole's checkpoint-based selection."""
    config = {k: v for k, v in toy_config.items() if k != "epochs"}  # the per-model yaml sets the epochs
    diffurec_yaml, sasrec_yaml = tmp_path / "diffurec.yaml", tmp_path / "sasrec.yaml"
    diffurec_yaml.write_text(yaml.safe_dump(dict(FAST_DIFFUREC, epochs=1)))
    # a learning rate far too high: validation peaks before the last epoch, so the selection matters
    sasrec_yaml.write_text(yaml.safe_dump({"epochs": 8, "learning_rate": 1.0}))
    result = compare(["DiffuRec", "SASRec"], "toy", seeds=1, config_dict=config, output_dir="out",
                     model_config_files={"DiffuRec": str(diffurec_yaml), "SASRec": str(sasrec_yaml)},
                     popularity_floor=False)
    assert counted["datasets"] == 1
    assert not list((workdir / "saved").glob("*")) and not (workdir / "out" / "checkpoints").exists()
    diffurec, sasrec = result["runs"]
    assert diffurec["epochs_trained"] == 1 and sasrec["epochs_trained"] == 8
    assert sasrec["best_epoch"] < 8
    alone = run_recbole_diffusion(model="SASRec", dataset="toy", config_file_list=[str(sasrec_yaml)],
                                  config_dict=config, saved=True)
    assert sasrec["test"] == dict(alone["test_result"])
    assert sasrec["best_valid_score"] == alone["best_valid_score"]
    assert "n/a (1 seed" in result["significance"]["text"]


def test_popularity_floor_is_added_first_and_models_below_it_are_marked(workdir, toy_config, counted):
    """By default the sequential popularity model is the first row, of kind floor, trained one epoch whatever
    the budget; a model that does not beat it is marked; it is never the best baseline of the t-test."""
    config = dict(toy_config, **FAST_DIFFUREC)
    # SASRec at a learning rate of 0: untrained, it cannot beat the floor on the ring
    result = compare(["DiffuRec", "SASRec"], "toy", seeds=2, config_dict=config, output_dir="out",
                     budget_epochs=2, model_config_files={})
    runs = _lines(result["files"]["runs.jsonl"])
    assert [r["model"] for r in runs[:3]] == ["SeqPop", "DiffuRec", "SASRec"]
    assert runs[0]["kind"] == "floor" and runs[0]["epochs_trained"] == 1
    assert runs[1]["epochs_trained"] == 2
    floor = statistics.mean(r["test"]["ndcg@10"] for r in runs if r["model"] == "SeqPop")
    with open(result["files"]["comparison.md"]) as f:
        md = f.read()
    assert md.splitlines()[md.splitlines().index(next(l for l in md.splitlines() if l.startswith("|---"))) + 1] \
        .startswith("| SeqPop | floor |")
    assert f"**Popularity floor.** SeqPop" in md and f"test ndcg@10 {floor:.4f}" in md
    for model in ("DiffuRec", "SASRec"):
        mean = statistics.mean(r["test"]["ndcg@10"] for r in runs if r["model"] == model)
        assert (f"| {model} (not above popularity) |" in md) == (mean <= floor)
    assert result["significance"]["baseline"] == "SASRec"
    # asked not to: no floor
    result = compare(["SASRec"], "toy", seeds=1, config_dict=config, output_dir="out2", popularity_floor=False)
    assert [r["model"] for r in result["runs"]] == ["SASRec"]


def test_popularity_floor_marks_a_model_below_it(workdir):
    """The report marks, by mean over seeds, each model whose test value of the validation metric is not above
    the floor's (equal is not above)."""
    def run(model, kind, seed, ndcg):
        return {"model": model, "kind": kind, "seed": seed, "valid_metric": "ndcg@10", "best_valid_score": ndcg,
                "test": {"ndcg@10": ndcg}, "sec_per_epoch": 1.0, "epochs_trained": 1, "infer_ms_per_user": 1.0,
                "params": 1}

    runs = [run("SeqPop", "floor", 1, 0.10), run("SeqPop", "floor", 2, 0.10),
            run("DreamRec", "diffusion", 1, 0.12), run("DreamRec", "diffusion", 2, 0.07),  # mean 0.095
            run("DiffuRec", "diffusion", 1, 0.10), run("DiffuRec", "diffusion", 2, 0.10),  # equal: not above
            run("SASRec", "baseline", 1, 0.09), run("SASRec", "baseline", 2, 0.13)]  # mean 0.11
    compare_module.write_report(str(workdir), runs, ["SeqPop", "DreamRec", "DiffuRec", "SASRec"], ["# t"],
                                plot=False)
    md = (workdir / "comparison.md").read_text()
    assert "| DreamRec (not above popularity) | diffusion |" in md
    assert "| DiffuRec (not above popularity) | diffusion |" in md
    assert "| SASRec | baseline |" in md and "| SeqPop | floor |" in md
    assert "test ndcg@10 0.1000. Not above it: DreamRec, DiffuRec." in md


def test_budget_and_own_dataset_when_dataset_settings_differ(workdir, toy_config, counted, tmp_path):
    short = tmp_path / "short.yaml"
    short.write_text(yaml.safe_dump({"MAX_ITEM_LIST_LENGTH": 5, "epochs": 3}))
    lines = []
    # config_dict and the command line beat yaml files (RecBole's order): leave the length to the files
    config = {k: v for k, v in toy_config.items() if k != "MAX_ITEM_LIST_LENGTH"}
    result = compare(["SASRec", "GRU4Rec"], "toy", seeds=1, config_dict=dict(config, epochs=2),
                     model_config_files={"GRU4Rec": str(short)}, budget_epochs=1, output_dir="out",
                     keep_checkpoints=True, popularity_floor=False, say=lines.append)
    assert counted["datasets"] == 2
    assert any("GRU4Rec: dataset settings differ (MAX_ITEM_LIST_LENGTH=5 (not 50))" in line for line in lines)
    assert [run["epochs_trained"] for run in result["runs"]] == [1, 1]  # the budget beats every other setting
    assert "n/a: the comparison has no diffusion model" in result["significance"]["text"]
    for run in result["runs"]:  # asked for: the best model of each run is on disk, loadable
        name = f"{run['model']}-seed2020-{run['settings']}.pth"
        assert run["model_file"] == str(workdir / "out" / "checkpoints" / name)
        saved = load_checkpoint(run["model_file"])
        assert saved["model"] == run["model"] and saved["epoch"] + 1 == run["best_epoch"]
    # progress: a start and a finish line per run, and one line per epoch
    assert sum("SASRec seed 2020: training" in line for line in lines) == 1
    assert sum("SASRec seed 2020 epoch 1/1: train" in line and "valid ndcg@10" in line for line in lines) == 1
    assert sum("SASRec seed 2020: done in" in line and "test ndcg@10" in line for line in lines) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--compare=SASRec,DiffuRec,SASRec"], "Model 'SASRec' is listed twice"),
        (["--compare=DifuRec,SASRec"], "Unknown model 'DifuRec'. Did you mean 'DiffuRec'?"),
        (["--compare=DiffuRec,SASRec", "--seeds=0"], "--seeds must be a whole number >= 1, got '0'"),
        (["--compare=DiffuRec,SASRec", "--seeds=two"], "--seeds must be a whole number >= 1, got 'two'"),
        (["--compare=DiffuRec,SASRec", "--budget_epochs=0"], "--budget_epochs must be a whole number >= 1"),
        (["--compare=DiffuRec,SASRec", "--model_config=DreamRec:{yaml}"],
         "--model_config gives a file for 'DreamRec', which is not in --compare=DiffuRec,SASRec"),
        (["--compare=DiffuRec,SASRec", "--model_config=SASRec:{missing}"],
         "for SASRec (--model_config) does not exist"),
        (["--compare=DiffuRec,SASRec", "--model_config=SASRec"], "is not Model:path.yaml"),
        (["--compare=SASRec,DiffuRec", "--diffusion_steps=0"], "diffusion_steps=0 for DiffuRec"),
        (["--compare=DiffuRec,SASRec", "--dataset=beauty"], "Dataset 'beauty' not found"),
        (["--compare=DiffuRec,SASRec", "--fork_from={missing}", "--lr_plateau_decays=1", "--lr_gamma=0.1"],
         "no such folder. Give the checkpoints folder of a comparison run with --keep_checkpoints=True"),
        (["--compare=DiffuRec,SASRec", "--fork_from={folder}"], "it needs decay on plateau, e.g. --lr_plateau_decays=1"),
    ],
)
def test_bad_input_is_one_line_before_any_training(monkeypatch, capsys, toy_config, counted, tmp_path, args, message):
    (tmp_path / "ok.yaml").write_text("epochs: 1\n")
    args = [a.format(yaml=tmp_path / "ok.yaml", missing=tmp_path / "missing.yaml", folder=tmp_path) for a in args]
    code, _, err = cli(monkeypatch, capsys, toy_config, *args)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert counted == {"datasets": 0, "runs": 0}


@pytest.mark.parametrize("model, die_after", [("DiffuRec", 2), ("BERT4Rec", 2), ("SASRec", 4)])
def test_a_run_cut_short_continues_from_its_last_epoch_to_the_same_result(workdir, toy_config, monkeypatch, model,
                                                                         die_after):
    """A comparison killed after epoch 2 of 4 continues at epoch 3 and ends exactly where an uninterrupted run
    ends: same curve, same best epoch, same test metrics (weights, optimizer, early stopping and every random
    generator are restored; BERT4Rec's masking draws from Python's, DiffuRec's noise from torch's). Killed after
    its last epoch, before its test, it only tests."""
    config = dict(toy_config, **FAST_DIFFUREC, epochs=4, eval_step=1, stopping_step=10)
    whole = compare([model], "toy", seeds=1, config_dict=config, output_dir="whole", popularity_floor=False)
    whole_run = whole["runs"][0]
    assert "resumed_after_epoch" not in whole_run and not list((workdir / "whole" / "progress").iterdir())

    saves = []
    save = compare_module.save_checkpoint

    def save_then_die(state, path):
        save(state, path)
        saves.append(state["epoch"])
        best = state["best"]  # the best weights are saved apart only when they are not the state's own
        assert (best["state"] is None) == (best["epoch"] == state["epoch"]), (best["epoch"], state["epoch"])
        if len(saves) == die_after:
            raise KeyboardInterrupt  # the process is killed right after this epoch's state is on disk

    monkeypatch.setattr(compare_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        compare([model], "toy", seeds=1, config_dict=config, output_dir="cut", popularity_floor=False)
    assert not (workdir / "cut" / "runs.jsonl").exists() or not _lines(workdir / "cut" / "runs.jsonl")
    (state_file,) = (workdir / "cut" / "progress").glob("*.pth")
    # each toy run improves at every epoch: the cut comes at a best epoch, whose weights are the state's own (the
    # resume below rebuilds the best weights from them; the other case is the best weights saved apart, as before)
    assert load_checkpoint(str(state_file))["best"]["state"] is None
    assert len(list((workdir / "cut" / "progress").iterdir())) == 1
    monkeypatch.setattr(compare_module, "save_checkpoint", save)
    compare([model], "toy", seeds=1, config_dict=config, output_dir="cut", popularity_floor=False, report_only=True)
    best = max(reversed(whole_run["valid_curve"][:die_after]), key=lambda point: point[1])  # a tie: the later
    assert f"| {model} | 2020 | {die_after} | {best[1]:.4f} (epoch {best[0]}) |" in (
        workdir / "cut" / "comparison.md").read_text()

    resumed = compare([model], "toy", seeds=1, config_dict=config, output_dir="cut", popularity_floor=False,
                      keep_checkpoints=True)
    run = resumed["runs"][0]
    saved = load_checkpoint(run["model_file"])  # the best epoch's weights, even when it came before the cut
    assert saved["epoch"] + 1 == run["best_epoch"] == whole_run["best_epoch"]
    assert run["resumed_after_epoch"] == die_after and run["epochs_trained"] == 4 and len(run["epoch_seconds"]) == 4
    assert run["cpus"] == whole_run["cpus"] == [compare_module.cpu_description()]  # one machine trained both
    assert [point[:2] for point in run["valid_curve"]] == [point[:2] for point in whole_run["valid_curve"]]
    assert run["best_epoch"] == whole_run["best_epoch"] and run["test"] == whole_run["test"]
    assert not list((workdir / "cut" / "progress").iterdir())  # deleted once the run is in runs.jsonl
    assert "Runs in progress" not in (workdir / "cut" / "comparison.md").read_text()


def test_a_run_with_decay_on_plateau_forks_from_where_the_same_run_without_it_stopped(workdir, toy_config,
                                                                                      monkeypatch):
    """Scripted validation scores 0.5, then 0.4 at every epoch, patience 1: the run without decay stops after
    epoch 3 and keeps its last state; the same run with one decay on plateau, forked from that state, trains only
    epochs 4-5 (rate x gamma from epoch 4) and ends exactly where it ends when trained from its first epoch: the
    same weights, optimizer, rates and test metrics."""
    from recbole.trainer import Trainer

    def scripted(trainer, valid_data, show_progress=False):
        score = 0.5 if trainer._epoch_in_progress == 0 else 0.4
        return score, {"ndcg@10": score}

    monkeypatch.setattr(Trainer, "_valid_epoch", scripted)
    config = dict(toy_config, **FAST_DIFFUREC, epochs=20, eval_step=1, stopping_step=1, learning_rate=0.01)
    plain = compare(["DiffuRec"], "toy", seeds=1, config_dict=config, output_dir="plain", popularity_floor=False,
                    keep_checkpoints=True)["runs"][0]
    assert plain["epochs_trained"] == 3 and not list((workdir / "plain" / "progress").glob("*.pth"))
    (parent,) = (workdir / "plain" / "checkpoints").glob("*.last.pth")  # kept, not deleted, with keep_checkpoints
    assert parent.name == f"DiffuRec-seed2020-{plain['settings']}.last.pth"

    decay = dict(config, lr_plateau_decays=1, lr_gamma=0.5)
    lines, trained = [], []
    train_epoch = Trainer._train_epoch

    def counted_epoch(trainer, train_data, epoch_idx, *args, **kwargs):
        trained.append(epoch_idx + 1)
        return train_epoch(trainer, train_data, epoch_idx, *args, **kwargs)

    save = compare_module.save_checkpoint

    def save_then_die(state, path):
        save(state, path)
        if state["epoch"] == 3:
            raise KeyboardInterrupt  # killed after epoch 4: the forked run resumes like any other

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_train_epoch", counted_epoch)
        patch.setattr(compare_module, "save_checkpoint", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            compare(["DiffuRec"], "toy", seeds=1, config_dict=decay, output_dir="forked", popularity_floor=False,
                    keep_checkpoints=True, fork_from="plain/checkpoints", say=lines.append)
        patch.setattr(compare_module, "save_checkpoint", save)
        forked = compare(["DiffuRec"], "toy", seeds=1, config_dict=decay, output_dir="forked", popularity_floor=False,
                         keep_checkpoints=True, fork_from="plain/checkpoints", say=lines.append)["runs"][0]
    assert trained == [4, 5]  # epochs 1-3 are the stopped run's
    assert any("forked from" in line and "after epoch 3" in line for line in lines), lines
    assert forked["forked_from"] == {"file": str(parent), "after_epoch": 3}
    scratch = compare(["DiffuRec"], "toy", seeds=1, config_dict=decay, output_dir="scratch", popularity_floor=False,
                      keep_checkpoints=True)["runs"][0]
    assert "forked_from" not in scratch and forked["settings"] == scratch["settings"] != plain["settings"]
    assert forked["epochs_trained"] == scratch["epochs_trained"] == 5
    assert [p[:2] for p in forked["valid_curve"]] == [p[:2] for p in scratch["valid_curve"]]
    assert forked["test"] == scratch["test"]
    (a,), (b,) = [list((workdir / name / "checkpoints").glob("*.last.pth")) for name in ("forked", "scratch")]
    a, b = load_checkpoint(str(a)), load_checkpoint(str(b))
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert [g["lr"] for g in a["optimizer"]["param_groups"]] == [0.005] * len(a["optimizer"]["param_groups"])
    assert [g["plateau_decays"] for g in a["optimizer"]["param_groups"]] == [1] * len(a["optimizer"]["param_groups"])
    assert all(torch.equal(x, y) for x, y in zip(a["optimizer"]["state"][0].values(),
                                                 b["optimizer"]["state"][0].values()))

    # a run that ended at its epoch limit is no plateau: nothing to fork, the run starts from its first epoch
    short = dict(config, epochs=2)
    compare(["DiffuRec"], "toy", seeds=1, config_dict=short, output_dir="short", popularity_floor=False,
            keep_checkpoints=True)
    lines.clear()
    run = compare(["DiffuRec"], "toy", seeds=1, config_dict=dict(short, lr_plateau_decays=1, lr_gamma=0.5),
                  output_dir="short_decay", popularity_floor=False, fork_from="short/checkpoints",
                  say=lines.append)["runs"][0]
    assert any("ended at its epoch limit, not at a plateau" in line for line in lines), lines
    assert "forked_from" not in run and "resumed_after_epoch" not in run


def test_time_to_quality_reads_each_runs_validation_curve():
    def run(model, kind, seed, curve, best_epoch):
        return {"model": model, "kind": kind, "seed": seed, "valid_metric": "ndcg@10", "threads": 1,
                "best_valid_score": max(p[1] for p in curve), "best_epoch": best_epoch, "valid_curve": curve}

    runs = [run("SASRec", "baseline", 1, [[1, 0.01, 10, 1], [2, 0.03, 20, 2], [3, 0.02, 30, 3]], 2),  # 0.03
            run("SASRec", "baseline", 2, [[1, 0.05, 10, 1]], 1),  # target 0.05; seeds SASRec lacks: mean 0.04
            run("DiffuRec", "diffusion", 1, [[1, 0.02, 5, 5], [2, 0.04, 10, 10], [3, 0.06, 15, 15]], 3),
            run("DiffuRec", "diffusion", 2, [[1, 0.01, 5, 5], [2, 0.02, 10, 10]], 2),
            run("DreamRec", "diffusion", 1, [[1, 0.001, 1, 1]], 1),
            # epoch 2 slowed by another job (100 s instead of 10): measured 120 s, at its median pace 3 x 10 s
            run("DiQDiff", "diffusion", 1, [[1, 0.01, 10, 0], [2, 0.02, 110, 0], [3, 0.05, 120, 0]], 3),
            run("DiQDiff", "diffusion", 3, [[1, 0.03, 10, 0], [2, 0.045, 20, 0]], 2)]  # seed 3: target 0.04
    table = "\n".join(compare_module.time_to_quality(runs, ["SASRec", "DiffuRec", "DreamRec", "DiQDiff"]))
    assert "SASRec's best validation ndcg@10 of the same seed: 0.0300 (seed 1), 0.0500 (seed 2)" in table
    assert "(their mean, 0.0400, for a seed SASRec did not run)" in table
    # SASRec reaches its own best in every seed: epoch 2 (22 s) and epoch 1 (11 s)
    assert "| SASRec | 11 s | 1.5 | 16 s (16 s) | 1.5 | 16 s (16 s) |" in table
    # DiffuRec: best at epochs 3 and 2 (30 s and 20 s); reaches 0.03 at epoch 2 in seed 1 (20 s); never 0.05 in seed 2
    assert "| DiffuRec | 10 s | 2.5 | 25 s (25 s) | 2.0 (1 of 2 seeds; others never) | 20 s (20 s) |" in table
    assert "| DreamRec | 2 s | 1.0 | 2 s (2 s) | never | - |" in table
    # DiQDiff: 0.03 at epoch 3 in seed 1 (120 s; 30 s at pace), 0.04 at epoch 2 in seed 3 (20 s): means 2.5, 70 s
    assert "| DiQDiff | 10 s | 2.5 | 70 s (25 s) | 2.5 | 70 s (25 s) |" in table


def test_seeds_per_model(workdir, toy_config, counted):
    assert compare_module.parse_seeds("2,DiffuRec:3, SASRec:4") == (2, {"DiffuRec": 3, "SASRec": 4})
    with pytest.raises(compare_module.RecBoleDiffusionError, match=r"write Model:N .*got 'DiffuRec'"):
        compare_module.parse_seeds("2,DiffuRec")
    with pytest.raises(compare_module.RecBoleDiffusionError, match="count for 'SASRex', which is not in"):
        compare(["SASRec"], "toy", seeds=1, model_seeds={"SASRex": 2}, config_dict=toy_config)
    result = compare(["SASRec"], "toy", seeds=1, model_seeds={"SASRec": 2}, config_dict=toy_config,
                     output_dir="out")
    assert [(r["model"], r["seed"]) for r in result["runs"]] == [("SeqPop", 2020), ("SASRec", 2020),
                                                                   ("SASRec", 2021)]
    assert counted["runs"] == 3 and "Seeds: 2020, 2021 (the first 1 for SeqPop)" in (
        workdir / "out" / "comparison.md").read_text()
    # a report of runs trained elsewhere (e.g. by another process into the same folder): nothing is trained
    result = compare(["SASRec", "BERT4Rec"], "toy", seeds=1, model_seeds={"SASRec": 2}, config_dict=toy_config,
                     output_dir="out", report_only=True)
    assert result["trained"] == 0 and result["resumed"] == 3 and counted["runs"] == 3
    assert "3 of 4 runs finished (partial table" in (workdir / "out" / "comparison.md").read_text()


def test_a_runs_identity_leaves_the_schedule_out_when_no_schedule_is_on(toy_config):
    """Runs recorded before the learning-rate schedule existed keep their identity: with no schedule on, its keys
    (lr_gamma included) change nothing and are not part of the settings key; with one on, each of them counts."""
    from recbole_diffusion.config import Config

    def key(**overrides):
        return compare_module.settings_key(Config(model="DiffuRec", config_dict=dict(toy_config, **overrides)))

    plain, stepped = key(), key(lr_step_size=10)
    assert key(lr_gamma=0.5) == plain and key(learning_rate=0.01) != plain
    assert stepped != plain and key(lr_step_size=10, lr_gamma=0.5) != stepped
    assert key(lr_plateau_decays=1) not in (plain, stepped)
    assert key(lr_plateau_decays=1, lr_gamma=0.5) != key(lr_plateau_decays=1)


_HOLD_A_CLAIM = """
import sys, time
from recbole_diffusion import compare
assert compare.claim_run(sys.argv[1]) is None
print("held", flush=True)
time.sleep(600)
"""


def _worker_holding(path):
    """Another process that claims ``path`` and keeps it until killed."""
    other = subprocess.Popen([sys.executable, "-c", _HOLD_A_CLAIM, str(path)], stdout=subprocess.PIPE, text=True)
    assert other.stdout.readline().strip() == "held"
    return other


def test_a_claim_is_held_by_one_worker_and_a_dead_workers_claim_is_taken_over(tmp_path):
    path = str(tmp_path / "run.claim")
    assert compare_module.claim_run(path) is None  # this process holds it now
    holder = compare_module.claim_run(path)  # a second claim while the holder lives is refused
    assert holder == {"host": socket.gethostname(), "pid": os.getpid()}
    compare_module.release_run(path)
    assert not os.path.exists(path)

    other = _worker_holding(path)
    try:
        assert compare_module.claim_run(path)["pid"] == other.pid
    finally:
        other.kill()  # killed without a chance to release: the system drops its lock
        other.wait()
    assert os.path.exists(path)
    assert compare_module.claim_run(path) is None and json.load(open(path))["pid"] == os.getpid()
    compare_module.release_run(path)


def test_the_table_after_each_run_has_the_runs_other_workers_finished_meanwhile(workdir, toy_config, counted,
                                                                               monkeypatch):
    config = dict(toy_config, epochs=1)
    compare(["GRU4Rec"], "toy", seeds=1, config_dict=config, output_dir="elsewhere", popularity_floor=False)
    gru4rec_line = open(workdir / "elsewhere" / "runs.jsonl").readline()
    train, tables = compare_module.train_and_test, []

    def train_and_read_the_table(config, *args, **kwargs):
        if config["model"] == "SeqPop":  # another worker finishes GRU4Rec while this one trains the floor
            with open(workdir / "out" / "runs.jsonl", "a") as f:
                f.write(gru4rec_line)
        else:
            tables.append((workdir / "out" / "comparison.md").read_text())
        return train(config, *args, **kwargs)

    monkeypatch.setattr(compare_module, "train_and_test", train_and_read_the_table)
    result = compare(["SASRec", "GRU4Rec"], "toy", seeds=1, config_dict=config, output_dir="out")
    assert result["trained"] == 2 and result["elsewhere"] == 1
    (table,) = tables  # the table written after SeqPop, read while SASRec trains
    assert "| SeqPop |" in table and "| GRU4Rec |" in table and "| SASRec |" not in table


def test_two_workers_share_one_comparison(workdir, toy_config, counted, monkeypatch, capsys):
    """A run another live worker has claimed is skipped; runs other workers finish meanwhile are read back, not
    trained again; once the other worker is gone, its claim is taken over and the run trained here."""
    config = dict(toy_config, epochs=1)
    elsewhere = compare(["SASRec", "GRU4Rec"], "toy", seeds=1, config_dict=config, output_dir="elsewhere",
                        popularity_floor=False)
    assert elsewhere["trained"] == 2 and counted["runs"] == 2
    gru4rec_line = next(line for line in open(workdir / "elsewhere" / "runs.jsonl") if '"GRU4Rec"' in line)

    (workdir / "out" / "progress").mkdir(parents=True)
    key = elsewhere["runs"][0]["settings"]
    claim = workdir / "out" / "progress" / f"SASRec-seed2020-{key}.claim"
    other = _worker_holding(claim)
    try:
        train = compare_module.train_and_test

        def train_while_another_worker_finishes_gru4rec(config, *args, **kwargs):
            result = train(config, *args, **kwargs)
            with open(workdir / "out" / "runs.jsonl", "a") as f:
                f.write(gru4rec_line)
            return result

        monkeypatch.setattr(compare_module, "train_and_test", train_while_another_worker_finishes_gru4rec)
        result = compare(["SASRec", "GRU4Rec"], "toy", seeds=1, config_dict=config, output_dir="out")
        out = capsys.readouterr().out
        assert "SASRec seed 2020: another worker is training it (pid" in out
        assert "GRU4Rec seed 2020: finished by another worker" in out
        assert result["trained"] == 1 and result["elsewhere"] == 1 and counted["runs"] == 3  # SeqPop only
        assert [r["model"] for r in result["runs"]] == ["SeqPop", "GRU4Rec"]
        assert claim.exists()  # still the other worker's
    finally:
        other.kill()
        other.wait()
    monkeypatch.setattr(compare_module, "train_and_test", train)
    result = compare(["SASRec", "GRU4Rec"], "toy", seeds=1, config_dict=config, output_dir="out")
    assert result["trained"] == 1 and [r["model"] for r in result["runs"]] == ["SeqPop", "SASRec", "GRU4Rec"]
    assert not list((workdir / "out" / "progress").iterdir())


def test_the_readme_leaderboard_table_is_the_mean_and_sd_of_each_models_finished_seeds(tmp_path):
    """benchmarks/leaderboard_table.py: one row per model in the README's order, mean ± sd over its seeds (a seed's
    later record wins), the best mean of each column in bold (never the floor's), and the runs left counted."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "leaderboard_table", os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks",
                                          "leaderboard_table.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def run(model, seed, ndcg, epochs=(5, 3), seconds=(10.0, 30.0, 20.0)):
        scores = {"ndcg@10": ndcg, "hit@10": 2 * ndcg, "ndcg@5": ndcg / 2}
        return {"model": model, "seed": seed, "valid": scores, "test": scores, "epochs_trained": epochs[0],
                "best_epoch": epochs[1], "epoch_seconds": list(seconds), "sec_per_epoch": 99.0}

    path = tmp_path / "runs.jsonl"
    records = [run("SeqPop", 2020, 0.5), run("SASRec", 2020, 0.01), run("SASRec", 2021, 0.9),
               run("SASRec", 2021, 0.03, epochs=(7, 2)), run("DiffuRec", 2020, 0.04, seconds=(50.0,))]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    lines, finished, planned = module.table(module.read_runs(str(path)))
    assert (finished, planned) == (4, 19)
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in lines[2:]}
    assert rows["SASRec (RecBole, CE)"][1:4] == ["2", "5 (3), 7 (2)", "0.0200 ± 0.0141"]
    assert rows["SASRec (RecBole, CE)"][-1] == "20 |"  # the median epoch (20 s), averaged over the seeds
    assert rows["DiffuRec"][3] == "**0.0400**" and rows["DiffuRec"][-1] == "50 |"
    assert rows["popularity (SeqPop)"][3] == "0.5000"  # above every model here, and not in bold
    assert "BERT4Rec (RecBole)" not in rows and lines[-3].startswith("| *published, DiffuRec paper")


def test_test_curve_is_a_diagnostic_that_leaves_training_and_selection_as_they_were(workdir, toy_config):
    """--test_curve tests the model after every validation: the curve's entry at the best epoch is the run's own test
    result, and training, validation and selection are exactly those of the same run without it (evaluation draws
    come from their own generators); the flag is not part of the run's identity."""
    config = dict(toy_config, **FAST_DIFFUREC, epochs=3, eval_step=1, stopping_step=10)
    plain = compare(["DiffuRec"], "toy", seeds=1, config_dict=config, output_dir="plain",
                    popularity_floor=False)["runs"][0]
    run = compare(["DiffuRec"], "toy", seeds=1, config_dict=config, output_dir="curve", popularity_floor=False,
                  test_curve=True)["runs"][0]
    assert "test_curve" not in plain and run["settings"] == plain["settings"]
    assert [point[:2] for point in run["valid_curve"]] == [point[:2] for point in plain["valid_curve"]]
    assert run["best_epoch"] == plain["best_epoch"] and run["test"] == plain["test"]
    assert [entry["epoch"] for entry in run["test_curve"]] == [1, 2, 3]
    assert [entry["valid"]["ndcg@10"] for entry in run["test_curve"]] == [p[1] for p in run["valid_curve"]]
    assert run["test_curve"][run["best_epoch"] - 1]["test"] == run["test"]
    assert set(run["test_curve"][0]["test"]) == set(METRICS)


def test_test_curve_report_picks_each_rules_epoch_on_a_toy_curve():
    """benchmarks/test_curve_report.py: ours keeps the best validation NDCG@10 (RecBole: the later epoch on a tie);
    the official DiffuRec rule keeps
    the last epoch where any of the six validation metrics set a new best; the oracle, the best test NDCG@10."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "test_curve_report", os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks",
                                          "test_curve_report.py"))
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.dirname(spec.origin))  # it imports benchmarks/common.py
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(os.path.dirname(spec.origin))

    def entry(epoch, ndcg10, hit20, test):
        valid = dict.fromkeys(METRICS, 0.01)
        valid.update({"ndcg@10": ndcg10, "hit@20": hit20})
        return {"epoch": epoch, "valid": valid, "test": {"ndcg@10": test, "hit@10": 2 * test}}

    curve = [entry(1, 0.02, 0.10, 0.010), entry(2, 0.05, 0.10, 0.030), entry(3, 0.05, 0.10, 0.040),
             entry(4, 0.04, 0.25, 0.020), entry(5, 0.03, 0.20, 0.050)]
    assert module.ours(curve)["epoch"] == 3  # epoch 3 ties epoch 2 at 0.05: RecBole keeps the later
    assert module.official(curve)["epoch"] == 4  # hit@20 improved at 4; nothing improved at 3 or 5
    assert module.oracle(curve)["epoch"] == 5
