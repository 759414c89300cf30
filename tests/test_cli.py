"""The CLI and the registry: RecBole's models through our runner, and one clear line for each bad input."""

import os
import subprocess
import sys
import zipfile

import pytest
import torch

from recbole_diffusion.cli import entry_point
from recbole_diffusion.config import Config
from recbole_diffusion.registry import get_model
from recbole_diffusion.trainer import load_checkpoint
from recbole_diffusion.utils import CheckpointError, RecBoleDiffusionError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(monkeypatch, capsys, toy_config, *args):
    """Run the CLI in-process as `run_recbole_diffusion.py args...`; returns (exit code, stdout, stderr)."""
    given = {a.split("=")[0][2:] for a in args}
    overrides = [f"--{k}={v!r}" if isinstance(v, (dict, list)) else f"--{k}={v}" for k, v in toy_config.items()
                 if k != "dataset" and k not in given]
    dataset = [] if "dataset" in given else ["--dataset=toy"]
    argv = ["run_recbole_diffusion.py", *dataset, *overrides, *args]
    monkeypatch.setattr(sys, "argv", argv)
    code = entry_point(argv[1:])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("model", ["SASRec", "BERT4Rec"])
def test_recbole_models_run_through_our_cli(monkeypatch, capsys, toy_config, model):
    code, out, err = cli(monkeypatch, capsys, toy_config, f"--model={model}")
    assert code == 0, err
    table = out[out.index(f"{model} on toy"):]
    assert "ndcg@10" in table and "hit@20" in table
    assert "best model:" in out


def test_diffurec_through_cli_prints_table(monkeypatch, capsys, toy_config):
    code, out, err = cli(monkeypatch, capsys, toy_config, "--model=DiffuRec", "--sampler=ddim", "--sampling_steps=2")
    assert code == 0, err
    lines = out[out.index("DiffuRec on toy"):].splitlines()
    assert lines[1].split() == ["metric", "valid", "test"]
    assert [line.split()[0] for line in lines[2:8]] == ["hit@5", "hit@10", "hit@20", "ndcg@5", "ndcg@10", "ndcg@20"]


def test_registry_finds_ours_then_recboles():
    assert get_model("DiffuRec").__module__ == "recbole_diffusion.model.sequential_recommender.diffurec"
    assert get_model("SASRec").__module__.startswith("recbole.model")
    assert get_model("DiffRec").__module__.startswith("recbole.model")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model=DifuRec"], "Unknown model 'DifuRec'. Did you mean 'DiffuRec'?"),
        (["--model=DiffuRec", "--noise_schedule=trunk_lin"], "noise_schedule='trunk_lin'"),
        (["--model=DiffuRec", "--diffusion_steps=0"], "diffusion_steps=0 for DiffuRec: must be a positive integer"),
        (["--model=DiffuRec", "--hidden_size=-4"], "hidden_size=-4 for DiffuRec: must be a positive integer"),
        (["--model=DiffuRec", "--n_heads=3"], "hidden_size=16 for DiffuRec: must be divisible by n_heads=3"),
        (["--model=DiffuRec", "--sampler=ddim", "--sampling_steps=0"], "sampling_steps=0"),
        (["--model=DiffuRec", "--emb_dropout=1.5"], "emb_dropout=1.5"),
    ],
)
def test_bad_input_gives_one_clear_line(monkeypatch, capsys, toy_config, args, message):
    code, out, err = cli(monkeypatch, capsys, toy_config, *args)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err


def test_missing_dataset_is_one_line_not_a_download(monkeypatch, capsys, toy_config):
    code, _, err = cli(monkeypatch, capsys, toy_config, "--model=DiffuRec", "--dataset=beauty")
    assert code == 2 and err.count("\n") == 1
    assert "Dataset 'beauty' not found" in err and "--data_path=" in err


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(corrupt)
    # a RecBole-style checkpoint pickles objects (here a class): never unpickled
    foreign = tmp_path / "recbole.pth"
    torch.save({"config": RecBoleDiffusionError, "state_dict": {}}, foreign, pickle_protocol=4)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(foreign)
    plain = tmp_path / "plain.pth"
    torch.save({"state_dict": {}}, plain)
    with pytest.raises(CheckpointError, match="not a recbole_diffusion checkpoint"):
        load_checkpoint(plain)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pth")
    assert corrupt.read_bytes() == b"not a checkpoint at all"  # nothing already saved is touched


def test_corrupt_checkpoint_through_load_data_and_model(tmp_path):
    from recbole_diffusion import load_data_and_model

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError):
        load_data_and_model(str(bad))


def test_wheel_ships_the_properties(tmp_path):
    """A non-editable install must find properties/ inside the package."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), ROOT],
        check=True, capture_output=True,
    )
    wheel = next(p for p in os.listdir(tmp_path) if p.endswith(".whl"))
    names = zipfile.ZipFile(tmp_path / wheel).namelist()
    for required in ("recbole_diffusion/properties/overall.yaml", "recbole_diffusion/properties/model/DiffuRec.yaml",
                     "recbole_diffusion/properties/quick_start_config/sequential.yaml",
                     "recbole_diffusion/model/sequential_recommender/diffurec.py", "run_recbole_diffusion.py"):
        assert required in names, required


def test_undescribed_dataset_loads_every_column(toy_config):
    """RecBole would load only user_id and item_id for a dataset without yaml, and sequential models would fail."""
    from recbole_diffusion.config import Config

    config = Config(model="DiffuRec", config_dict={k: v for k, v in toy_config.items() if k != "load_col"})
    assert config["load_col"] is None
    assert Config(model="DiffuRec", dataset="ml-100k", config_dict={"state": "ERROR"})["load_col"]["inter"] == [
        "user_id", "item_id", "rating", "timestamp"]


def test_schedule_invalid_for_its_steps_is_caught_before_data(monkeypatch, capsys, toy_config):
    code, _, err = cli(monkeypatch, capsys, toy_config, "--model=DiffuRec", "--noise_schedule=linear",
                       "--diffusion_steps=10")
    assert code == 2 and err.count("\n") == 1
    assert "DiffuRec: noise_schedule 'linear' with diffusion_steps=10 gives betas outside (0, 1)" in err


def _cli_process(toy_config, *args):
    """The CLI in a fresh process (logging is set up once per process): (exit code, stdout, stderr)."""
    overrides = [f"--{k}={v!r}" if isinstance(v, (dict, list)) else f"--{k}={v}" for k, v in toy_config.items()
                 if k not in ("dataset", "state")]
    done = subprocess.run([sys.executable, os.path.join(ROOT, "run_recbole_diffusion.py"), "--dataset=toy",
                           *overrides, *args], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    return done.returncode, done.stdout, done.stderr


def test_normal_run_is_quiet_and_the_details_go_to_the_log(toy_config, workdir):
    """A run prints a short summary, a line or two per epoch and the table; the configuration dump and the
    model tree are in the log file only (--verbose=True prints them too); no library warning is printed."""
    code, out, err = _cli_process(dict(toy_config, epochs=2), "--model=DiffuRec")
    assert code == 0, err
    lines = (out + err).strip().splitlines()
    assert len(lines) <= 40, "\n".join(lines)
    assert "DiffuRec on toy: 80 users" in err and "parameters; device cpu, 1 thread(s)" in err
    assert "epoch 1 training" in err and "ndcg@10" in out
    assert "learning_rate" not in out + err and "TransformerEncoder" not in out + err  # no dump, no tree
    assert "Warning" not in err
    log = next((workdir / "log" / "DiffuRec").glob("*.log")).read_text()
    assert "learning_rate" in log and "approximator" in log
    code, out, err = _cli_process(dict(toy_config, epochs=1), "--model=DiffuRec", "--verbose=True")
    assert code == 0 and "learning_rate" in err and "approximator" in err
    code, out, err = _cli_process(toy_config, "--model=DiffuRec", "--diffusion_steps=0")
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("error: Invalid hyperparameter")


def test_threads_are_set_before_any_work(monkeypatch, capsys, toy_config):
    before = torch.get_num_threads()
    try:
        code, _, err = cli(monkeypatch, capsys, toy_config, "--model=SASRec", "--threads=2")
        assert code == 0, err
        assert torch.get_num_threads() == 2
        code, _, err = cli(monkeypatch, capsys, toy_config, "--model=SASRec", "--threads=0")
        assert code == 2 and "Invalid threads=0" in err and err.count("\n") == 1
    finally:
        torch.set_num_threads(before)


def test_recbole_protocol_is_one_named_config_away(toy_config):
    from recbole_diffusion.config import Config

    path = os.path.join(ROOT, "properties", "config", "recbole-protocol.yaml")
    config = Config(model="SASRec", config_dict=toy_config, config_file_list=[path])
    assert config["metrics"] == ["Recall", "MRR", "NDCG", "Hit", "Precision"] and config["valid_metric"] == "MRR@10"
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}
    assert config["train_neg_sample_args"]["distribution"] == "none"  # CE: RecBole's own rule


def test_recboles_global_anomaly_detection_is_off_when_a_model_is_built(toy_config):
    import recbole.model.sequential_recommender  # noqa: F401  (its sine.py turns anomaly detection on)

    from recbole_diffusion.quick_start import build

    torch.autograd.set_detect_anomaly(True)  # as RecBole's import left it
    try:
        build(Config(model="SASRec", config_dict=toy_config))
        assert not torch.is_anomaly_enabled()
        build(Config(model="SASRec", config_dict=dict(toy_config, detect_anomaly=True)))
        assert torch.is_anomaly_enabled()
        with pytest.raises(RecBoleDiffusionError, match=r"detect_anomaly='yes': must be True or False"):
            build(Config(model="SASRec", config_dict=dict(toy_config, detect_anomaly="yes")))
    finally:
        torch.autograd.set_detect_anomaly(False)


def test_every_command_line_flag_is_known_to_the_unknown_key_check():
    from recbole_diffusion.cli import parse_args
    from recbole_diffusion.validation import CLI_FLAGS

    assert set(vars(parse_args([]))) <= CLI_FLAGS


def test_recboles_seed_is_not_read_as_a_prefix_of_our_seeds():
    """argparse takes a prefix of a flag for the flag: --seed=2022 (RecBole's seed) set --seeds to 2022 runs."""
    from recbole_diffusion.cli import parse_args

    args = parse_args(["--compare=SASRec", "--seed=2022"])
    assert args.seeds == "3"
    assert parse_args(["--compare=SASRec", "--seeds=2"]).seeds == "2"
