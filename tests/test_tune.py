"""Ray Tune sweeps (recbole_diffusion/tune.py): the search spaces we ship, real sweeps on the toy data (CPU trials,
one shared Ray session of 2 CPUs), a failing trial, an interrupted sweep resumed, and one clear line per bad input."""

import csv
import glob
import os
import shutil
import signal
import subprocess
import sys

import pytest
import yaml
from ray.tune import Callback
from test_cli import cli
from test_general import write_general_dataset

from recbole_diffusion.config import Config, properties_dir
from recbole_diffusion.registry import get_model
from recbole_diffusion.trainer import load_checkpoint
from recbole_diffusion.tune import Dimension, check_space, load_space, run_sweep, sample_space
from recbole_diffusion.utils import RecBoleDiffusionError

HYPER_FILES = sorted(glob.glob(os.path.join(properties_dir(), "hyper", "*.yaml")))
# tiny trials: DDIM with 2 steps keeps DiffuRec's evaluation short
# the general toy set (tests/test_general.py) with a backbone pretrained in 2 small epochs
TINY_GENERAL = {"dataset": "gtoy", "backbone_config": {"epochs": 2, "embedding_size": 8}, "train_batch_size": 64,
                "epochs": 1, "state": "ERROR", "show_progress": False, "use_gpu": False, "seed": 2020}
FAST = ["--model=DiffuRec", "--sampler=ddim", "--sampling_steps=2", "--cpus_per_trial=1"]


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def write_space(folder, text):
    path = os.path.join(str(folder), "space.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def read_rows(output_dir):
    with open(os.path.join(output_dir, "trials.csv")) as f:
        return list(csv.DictReader(f))


def test_search_spaces_ship_for_our_models_and_the_baselines():
    shipped = {os.path.basename(path)[:-5] for path in HYPER_FILES}
    assert {"DiffuRec", "DreamRec", "SeqDiffRec", "DimeRec", "DiQDiff", "SASRec", "BERT4Rec", "DiffRec", "LDiffRecAuto",
            "DDRM"} <= shipped
    for name in shipped:
        assert get_model(name).__name__ == name  # each file is named exactly as its model class


@pytest.mark.parametrize("path", HYPER_FILES, ids=lambda p: os.path.basename(p)[:-5])
def test_search_space_samples_a_model_that_builds(toy_config, workdir, path):
    """Every key is the model's, every listed value and range end passes its checks, and a drawn config builds
    the model on the toy data (the general toy set for a general model)."""
    from recbole.model.abstract_recommender import GeneralRecommender

    from recbole_diffusion.quick_start import build

    model = os.path.basename(path)[:-5]
    if issubclass(get_model(model), GeneralRecommender):
        toy_config = dict(TINY_GENERAL, data_path=write_general_dataset(str(workdir / "gdata")),
                          checkpoint_dir=toy_config["checkpoint_dir"])
    space = load_space(path)
    check_space(space, Config(model=model, dataset=toy_config["dataset"], config_dict=toy_config), path)
    sampled = sample_space(space, seed=0)
    assert sampled == sample_space(space, seed=0) and set(sampled) == set(space)
    for name, value in sampled.items():
        dim = space[name]
        if dim.kind in ("choice", "grid"):
            assert value in dim.args
        else:
            assert dim.args[0] <= value <= dim.args[1]
    # the drawn values, not the tiny sizes, where both set a key
    config = Config(model=model, dataset=toy_config["dataset"], config_dict=dict(toy_config, **sampled))
    assert all(config[name] == value for name, value in sampled.items())
    *_, net, _ = build(config)
    assert sum(p.numel() for p in net.parameters()) > 0


def test_ray_domains_match_the_yaml(ray_session):
    randint = Dimension("n_layers", "randint", [1, 3]).to_ray()
    assert {randint.sample() for _ in range(200)} == {1, 2, 3}  # both ends included
    lr = Dimension("learning_rate", "loguniform", [1e-4, 1e-2]).to_ray()
    assert all(1e-4 <= lr.sample() <= 1e-2 for _ in range(100))
    assert Dimension("x", "grid", [1, 2]).to_ray() == {"grid_search": [1, 2]}


def test_two_trial_sweep_writes_table_best_yaml_and_plot(monkeypatch, capsys, toy_config, ray_session, workdir):
    space = write_space(workdir, "learning_rate: {loguniform: [1e-3, 1e-2]}\n"
                                 "hidden_dropout_prob: {choice: [0.1, 0.2]}\n")
    out_dir = str(workdir / "sweep")
    code, out, err = cli(monkeypatch, capsys, toy_config, *FAST, f"--tune={space}", "--num_samples=2", "--epochs=2",
                         f"--output_dir={out_dir}")
    assert code == 0, err
    rows = read_rows(out_dir)
    assert [row["status"] for row in rows] == ["completed", "completed"]
    scores = [float(row["valid ndcg@10"]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    for row in rows:
        assert 1e-3 <= float(row["learning_rate"]) <= 1e-2 and row["hidden_dropout_prob"] in ("0.1", "0.2")
        assert row["best_epoch"] in ("0", "1") and row["epochs"] == "2"
        assert 0 <= float(row["test ndcg@10"]) <= 1
        # the trial's best model: our safe checkpoint in its own directory, trained with the command line's sizes
        (model_file,) = glob.glob(os.path.join(out_dir, f"trial_{row['trial']}", "checkpoints", "*.pth"))
        checkpoint = load_checkpoint(model_file)
        assert checkpoint["epoch"] == int(row["best_epoch"]) and checkpoint["config"]["hidden_size"] == 16
    with open(os.path.join(out_dir, "trials.md")) as f:
        assert len(f.read().strip().splitlines()) == 2 + 2
    assert os.path.getsize(os.path.join(out_dir, "valid_curves.png")) > 10_000

    best_yaml = os.path.join(out_dir, "best.yaml")
    with open(best_yaml) as f:
        best = yaml.safe_load(f)
    assert set(best) == {"learning_rate", "hidden_dropout_prob"}
    assert best["learning_rate"] == pytest.approx(float(rows[0]["learning_rate"]))
    config = Config(model="DiffuRec", dataset="toy", config_file_list=[best_yaml])  # what --config_files reads
    assert all(config[key] == value for key, value in best.items())
    assert "trials.csv" in out and "best config" in out


def test_failing_trial_is_recorded_and_the_sweep_goes_on(monkeypatch, capsys, toy_config, ray_session, workdir):
    space = write_space(workdir, "learning_rate: {grid: [0.005, 1e6]}\n")  # 1e6: the loss is NaN at once
    out_dir = str(workdir / "sweep")
    code, _, err = cli(monkeypatch, capsys, toy_config, *FAST, f"--tune={space}", "--num_samples=1", "--epochs=2",
                       "--scheduler=asha", f"--output_dir={out_dir}")
    assert code == 0, err
    rows = {float(row["learning_rate"]): row for row in read_rows(out_dir)}
    assert rows[0.005]["status"] == "completed" and rows[0.005]["test ndcg@10"]
    # Ray 2.6.3 names the error class, current Ray its module too
    status = rows[1e6]["status"]
    assert status.startswith("failed: ") and "TrainingDivergedError: Training loss became NaN in epoch 1" in status
    assert rows[1e6]["valid ndcg@10"] == ""
    # --max_failures=1 (the default) started it once more, from its last checkpoint; then it stayed failed
    assert rows[1e6]["failures"] == "2" and rows[0.005]["failures"] == "0"
    with open(os.path.join(out_dir, "best.yaml")) as f:
        assert yaml.safe_load(f) == {"learning_rate": 0.005}


class InterruptAtEpoch(Callback):
    """Presses Ctrl-C once, when a trial reports the given epoch. A resumed sweep restores its callbacks, so what
    was sent is kept on the class, not on the (pickled) instance."""

    sent = set()

    def __init__(self, epoch, key):
        self.epoch, self.key = epoch, key

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("epoch") == self.epoch and self.key not in InterruptAtEpoch.sent:
            InterruptAtEpoch.sent.add(self.key)
            os.kill(os.getpid(), signal.SIGINT)


def start_epochs(progress_csv):
    """The epochs a trial (re)started at: its first report and the first report after each restore."""
    with open(progress_csv) as f:
        return [int(r["epoch"]) for r in csv.DictReader(f) if r["iterations_since_restore"] == "1"]


def test_interrupted_sweep_resumes_from_its_last_checkpoint(toy_config, ray_session, workdir):
    space = write_space(workdir, "learning_rate: {choice: [0.005]}\n")
    out_dir = str(workdir / "sweep")
    config_dict = dict(toy_config, epochs=5, stopping_step=10, sampler="ddim", sampling_steps=2)
    kwargs = dict(config_dict=config_dict, num_samples=1, output_dir=out_dir)
    first = run_sweep("DiffuRec", "toy", space, callbacks=[InterruptAtEpoch(1, out_dir)], **kwargs)
    assert first["unfinished"] == 1 and first["rows"][0]["status"] == "unfinished"
    done_before = first["rows"][0]["epochs"]
    assert 2 <= done_before < 5

    with pytest.raises(RecBoleDiffusionError, match="already holds a sweep: pass --resume"):
        run_sweep("DiffuRec", "toy", space, **kwargs)
    second = run_sweep("DiffuRec", "toy", space, resume=True, **kwargs)
    (row,) = second["rows"]
    assert second["unfinished"] == 0 and row["status"] == "completed" and row["epochs"] == 5
    # the trial went on from its last Ray checkpoint (an epoch it had finished), not from epoch 0
    (progress,) = glob.glob(os.path.join(out_dir, "trial_*", "progress.csv"))
    starts = start_epochs(progress)
    assert len(starts) == 2 and starts[0] == 0 and 1 <= starts[1] <= done_before


def test_resume_goes_on_when_the_saved_state_names_a_deleted_checkpoint(capsys, toy_config, ray_session, workdir):
    """A driver killed after Ray registered a trial's newer checkpoint (deleting the older one) and before it saved
    the sweep's state: the state names the deleted checkpoint. Made here by deleting the named checkpoint, or moving
    it to the next index when it is the newest. --resume goes on from the newest checkpoint instead of failing the
    trial."""
    from recbole_diffusion.tune_report import saved_trials

    space = write_space(workdir, "learning_rate: {choice: [0.005]}\n")
    out_dir = str(workdir / "sweep")
    config_dict = dict(toy_config, epochs=5, stopping_step=10, sampler="ddim", sampling_steps=2)
    kwargs = dict(config_dict=config_dict, num_samples=1, output_dir=out_dir)
    first = run_sweep("DiffuRec", "toy", space, callbacks=[InterruptAtEpoch(1, out_dir)], **kwargs)
    assert first["unfinished"] == 1
    (trial,) = saved_trials(out_dir)
    current_ray = hasattr(trial.checkpoint, "path")  # Ray 2.6 (pinned) names it dir_or_data and falls back itself
    named = trial.checkpoint.path if current_ray else trial.checkpoint.dir_or_data
    newest = sorted(glob.glob(os.path.join(os.path.dirname(named), "checkpoint_*")))[-1]
    if newest == named:  # the interrupted trial's next checkpoint, which the driver had not registered, may be there
        os.rename(named, f"{named[:-6]}{int(named[-6:]) + 1:06d}")
    else:
        shutil.rmtree(named)
    capsys.readouterr()
    second = run_sweep("DiffuRec", "toy", space, resume=True, **kwargs)
    (row,) = second["rows"]
    assert row["status"] == "completed" and row["epochs"] == 5 and row["failures"] == 0
    mended = f"its saved state names {os.path.basename(named)}, which Ray had deleted"
    assert (mended in capsys.readouterr().out) == current_ray
    (progress,) = glob.glob(os.path.join(out_dir, "trial_*", "progress.csv"))
    starts = start_epochs(progress)
    assert len(starts) == 2 and starts[0] == 0 and starts[1] >= 1


def test_optuna_search_with_asha_resumes_with_its_searcher(toy_config, ray_session, workdir):
    """A TPE search (Ray Tune's OptunaSearch) stopped by Ctrl-C continues with its saved searcher: the sweep ends
    with the trials it was asked for, no more, an interrupted trial going on from its checkpoint."""
    pytest.importorskip("optuna", reason="optuna is not installed (pip install optuna)")
    space = write_space(workdir, "learning_rate: {loguniform: [1e-3, 1e-2]}\nhidden_dropout_prob: {choice: [0.1, 0.3]}\n")
    out_dir = str(workdir / "sweep")
    config_dict = dict(toy_config, epochs=2, stopping_step=10, sampler="ddim", sampling_steps=2)
    kwargs = dict(config_dict=config_dict, num_samples=2, output_dir=out_dir, scheduler="asha", search_alg="optuna")
    first = run_sweep("DiffuRec", "toy", space, callbacks=[InterruptAtEpoch(1, out_dir)], **kwargs)
    assert first["unfinished"] >= 1
    assert glob.glob(os.path.join(out_dir, "searcher-state-*.pkl"))  # the searcher's state, saved with the sweep
    second = run_sweep("DiffuRec", "toy", space, resume=True, **kwargs)
    rows = second["rows"]
    assert len(rows) == 2 and second["unfinished"] == 0
    assert all(row["status"] in ("completed", "stopped early") for row in rows)
    assert all(1e-3 <= row["learning_rate"] <= 1e-2 and row["hidden_dropout_prob"] in (0.1, 0.3) for row in rows)
    for path in glob.glob(os.path.join(out_dir, "trial_*", "progress.csv")):
        starts = start_epochs(path)
        assert starts[0] == 0 and all(start >= 1 for start in starts[1:])  # a resumed trial went on, not again


def test_hyperopt_search_with_asha(toy_config, ray_session, workdir):
    pytest.importorskip("hyperopt", reason="hyperopt is not installed (pip install hyperopt)")
    space = write_space(workdir, "learning_rate: {loguniform: [1e-3, 1e-2]}\nn_layers: {randint: [1, 2]}\n")
    out_dir = str(workdir / "sweep")
    result = run_sweep("DiffuRec", "toy", space, config_dict=dict(toy_config, sampler="ddim", sampling_steps=2),
                       num_samples=2, output_dir=out_dir, scheduler="asha", search_alg="hyperopt")
    rows = result["rows"]
    assert len(rows) == 2 and all(row["status"] in ("completed", "stopped early") for row in rows)
    assert all(1e-3 <= row["learning_rate"] <= 1e-2 and row["n_layers"] in (1, 2) for row in rows)
    assert glob.glob(os.path.join(out_dir, "searcher-state-*.pkl"))


@pytest.mark.parametrize(
    "space, args, message",
    [
        ("learning_rate: {logunifrom: [1e-4, 1e-2]}", [],
         "learning_rate: unknown distribution 'logunifrom'. Did you mean 'loguniform'?"),
        ("hidden_dropout_prob: {uniform: [0.3, 0.1]}", [], "empty range [0.3, 0.1]: lo must be below hi"),
        ("n_layers: {choice: []}", [], "empty choice list"),
        ("n_layers: {randint: [1, 2.5]}", [], "randint takes integers"),
        ("lambda_uncertanty: {choice: [0.001]}", [], "DiffuRec has no key 'lambda_uncertanty'. Did you mean "
                                                     "'lambda_uncertainty'?"),
        ("emb_dropout: {uniform: [0.1, 1.5]}", [], "allows emb_dropout=1.5: Invalid hyperparameter emb_dropout=1.5"),
        ("learning_rate: 0.001", [], "expected one {distribution: arguments}"),
        ("learning_rate: {choice: [0.001]}", ["--cpus_per_trial=64"],
         "No node of the Ray cluster can run even one trial: --cpus_per_trial=64"),
        ("learning_rate: {choice: [0.001]}", ["--gpus_per_trial=1"],
         "--gpus_per_trial=1, but the Ray cluster has no GPU"),
        ("learning_rate: {choice: [0.001]}", ["--num_samples=two"], "--num_samples=two: must be an integer"),
        ("learning_rate: {choice: [0.001]}", ["--scheduler=ashaa"], "Did you mean 'asha'?"),
        ("learning_rate: {choice: [0.001]}", ["--resume"], "Nothing to resume in"),
        ("learning_rate: {choice: [0.001]}", ["--search_alg=optuma"], "--search_alg=optuma: use one of random, "
                                                                       "optuna, hyperopt. Did you mean 'optuna'?"),
        ("learning_rate: {grid: [0.001, 0.01]}", ["--search_alg=hyperopt"],
         "is a grid, which only --search_alg=random runs; with --search_alg=hyperopt write it as learning_rate: "
         "{choice: [0.001, 0.01]}"),
        ("learning_rate: {choice: [0.001]}", ["--max_failures=-1"], "--max_failures=-1: must be an integer >= 0"),
        ("learning_rate: {choice: [0.001]}", ["--max_failures=many"], "--max_failures=many: must be an integer"),
    ],
)
def test_bad_input_is_one_line_before_anything_starts(monkeypatch, capsys, toy_config, ray_session, workdir,
                                                      space, args, message):
    path = write_space(workdir, space + "\n")
    out_dir = str(workdir / "sweep")
    code, _, err = cli(monkeypatch, capsys, toy_config, "--model=DiffuRec", f"--tune={path}",
                       f"--output_dir={out_dir}", *args)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert not os.path.exists(out_dir)  # no trial started


def test_a_missing_search_library_is_one_line_naming_the_install(monkeypatch, capsys, toy_config, workdir):
    monkeypatch.setitem(sys.modules, "optuna", None)  # what `import optuna` sees where it is not installed
    path = write_space(workdir, "learning_rate: {choice: [0.001, 0.01]}\n")
    code, _, err = cli(monkeypatch, capsys, toy_config, "--model=DiffuRec", f"--tune={path}", "--search_alg=optuna")
    assert code == 2 and err.count("\n") == 1
    assert "--search_alg=optuna needs the optuna library, which is not installed: pip install optuna" in err


def test_the_driver_leaves_the_visible_gpus_to_ray(monkeypatch, toy_config, ray_session, workdir):
    """RecBole's Config sets CUDA_VISIBLE_DEVICES=gpu_id; a Ray started after it would see one GPU of several."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    space = write_space(workdir, "learning_rate: {choice: [0.001]}\n")
    with pytest.raises(RecBoleDiffusionError, match="No node of the Ray cluster"):
        run_sweep("DiffuRec", "toy", space, config_dict=toy_config, cpus_per_trial=64)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"


def test_missing_space_file_is_one_line(monkeypatch, capsys, toy_config):
    code, _, err = cli(monkeypatch, capsys, toy_config, "--model=DiffuRec", "--tune=properties/hyper/DifuRec.yaml")
    assert code == 2 and err.count("\n") == 1 and "Search space file 'properties/hyper/DifuRec.yaml' not found" in err


def test_importing_the_package_does_not_import_ray():
    code = ("import sys, recbole_diffusion, recbole_diffusion.cli, recbole_diffusion.quick_start, "
            "recbole_diffusion.tune; "
            "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')], 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
