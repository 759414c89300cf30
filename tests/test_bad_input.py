"""Bad input and everyday datasets (issue 13): one `error:` line, exit status 2, no traceback, before any
training; nothing saved is lost."""

import os

import numpy as np
import pytest
from conftest import write_inter_file
from test_cli import cli

from recbole_diffusion.config import Config


def assert_one_line(code, err, *fragments):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def write_file(root, name, text):
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.inter"), "w") as f:
        f.write(text)
    return root


@pytest.mark.parametrize("args, fragments", [
    (["--epochs=-1"], ["Invalid epochs=-1", "whole number >= 1"]),
    (["--epochs=0"], ["Invalid epochs=0"]),
    (["--train_batch_size=abc"], ["Invalid train_batch_size='abc'"]),
    (["--eval_batch_size=0"], ["Invalid eval_batch_size=0"]),
    (["--learning_rate=-0.1"], ["Invalid learning_rate=-0.1", "> 0"]),
    (["--learning_rate=fast"], ["Invalid learning_rate='fast'"]),
    (["--stopping_step=0"], ["Invalid stopping_step=0"]),
    (["--lr_step_size=0"], ["Invalid lr_step_size=0", "or ~ for a constant learning rate"]),
    (["--lr_step_size=10", "--lr_gamma=1.5"], ["Invalid lr_gamma=1.5", "(0, 1]"]),
    (["--lr_plateau_decays=-1"], ["Invalid lr_plateau_decays=-1", "whole number >= 0"]),
    (["--lr_step_size=10", "--lr_plateau_decays=1"], ["cannot be combined with lr_step_size", "--lr_step_size=~"]),
    (["--eval_step=-2"], ["Invalid eval_step=-2"]),
    (["--seed=abc"], ["Invalid seed='abc'"]),
    (["--topk=[0,10]"], ["Invalid topk=[0, 10]"]),
    (["--metrics=['Hit','NDGC']"], ["'NDGC' is not a RecBole metric", "Did you mean 'ndcg'?"]),
    (["--valid_metric=NDCG@50"], ["Invalid valid_metric='NDCG@50'", "NDCG@10"]),
    (["--valid_metric=Recall@10"], ["Invalid valid_metric='Recall@10'"]),
    (["--learning_rat=0.01"], ["Unknown option --learning_rat", "Did you mean 'learning_rate'?",
                               "put it in a yaml file of yours"]),
    (["--checkpoint=model.pth"], ["Unknown option --checkpoint", "Did you mean 'checkpoint_dir'?"]),
    (["--model=DreamRec", "--w=-1"], ["Unknown option --w for DreamRec"]),
    (["--model=SASRec", "--lambda_uncertainty=0.1"], ["Unknown option --lambda_uncertainty for SASRec"]),
])
def test_bad_options_are_one_line_before_any_data(monkeypatch, capsys, toy_config, args, fragments):
    code, out, err = cli(monkeypatch, capsys, toy_config, *args)
    assert_one_line(code, err, *fragments)
    assert out == ""  # nothing ran, nothing was printed before the error


def test_a_key_from_the_users_own_yaml_is_intended(monkeypatch, capsys, toy_config, workdir):
    mine = workdir / "mine.yaml"
    mine.write_text("my_flag: 1\n")
    # on the command line it is unknown; in a yaml file of the user's it is accepted as intended
    code, _, err = cli(monkeypatch, capsys, toy_config, "--my_flag=2")
    assert_one_line(code, err, "Unknown option --my_flag")
    config = Config(model="DiffuRec", config_dict=toy_config, config_file_list=[str(mine)])
    from recbole_diffusion.validation import unknown_command_line_keys

    monkeypatch.setattr("sys.argv", ["x", "--my_flag=2"])
    config = Config(model="DiffuRec", config_dict=toy_config, config_file_list=[str(mine)])
    assert unknown_command_line_keys(config) == []


def test_yaml_syntax_error_names_file_line_and_column(monkeypatch, capsys, toy_config, workdir):
    bad = workdir / "bad.yaml"
    bad.write_text("epochs: 3\nlearning_rate: [0.1\nhidden_size: 8\n")
    code, _, err = cli(monkeypatch, capsys, toy_config, f"--config_files={bad}")
    assert_one_line(code, err, f"YAML error in config file '{bad}', line", "column")
    listing = workdir / "list.yaml"
    listing.write_text("- a\n- b\n")
    code, _, err = cli(monkeypatch, capsys, toy_config, f"--config_files={listing}")
    assert_one_line(code, err, "holds a list, not 'key: value' lines")


@pytest.mark.parametrize("text, fragments", [
    ("user_id:token\titem_id:token\ttimestamp:float\n", ["has a header but no interaction rows"]),
    ("user_id:token\titem_id:token\n" + "".join(f"u{u}\ti{i}\n" for u in range(5) for i in range(5)),
     ["has no column 'timestamp'", "sequential models order each user's items by it"]),
    ("user_id\titem_id:token\ttimestamp:float\nu1\ti1\t1\n", ["Malformed header", "'user_id' is not name:type"]),
    ("user_id:token\titem_id:tokn\ttimestamp:float\nu1\ti1\t1\n", ["Malformed header", "'item_id:tokn'"]),
    ("user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t1\nu1\ti2\t2\nu2\ti1\t1\n",
     ["No user of", "has the 3 interactions leave-one-out needs", "the split is impossible"]),
])
def test_dataset_problems_are_one_line_naming_the_file(monkeypatch, capsys, toy_config, workdir, text, fragments):
    root = write_file(str(workdir / "bad"), "broken", text)
    code, _, err = cli(monkeypatch, capsys, dict(toy_config, data_path=root), "--dataset=broken")
    assert_one_line(code, err, os.path.join(root, "broken", "broken.inter"), *fragments)


def test_short_users_are_counted_in_a_note(monkeypatch, capsys, toy_config, workdir):
    walks = {f"u{u}": [f"i{(u + k) % 20 + 1}" for k in range(6)] for u in range(30)}
    walks.update({"short1": ["i1", "i2"], "short2": ["i3"]})
    root = write_inter_file(str(workdir / "short"), "short", walks)
    code, out, err = cli(monkeypatch, capsys, dict(toy_config, data_path=root), "--dataset=short",
                         "--model=SASRec")
    assert code == 0, err
    assert "note: 2 of 32 users in short.inter have fewer than 3 interactions" in err


def test_nan_loss_stops_with_one_line_and_keeps_the_checkpoint(monkeypatch, capsys, toy_config, workdir):
    # a first run saves a model; a second, diverging one must not lose it
    code, out, err = cli(monkeypatch, capsys, toy_config, "--model=SASRec")
    assert code == 0, err
    saved = sorted(os.listdir(workdir / "saved"))
    code, out, err = cli(monkeypatch, capsys, toy_config, "--model=SASRec", "--learning_rate=1e30", "--epochs=3")
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "Training loss became" in lines[0] and "in epoch 1 of SASRec" in lines[0]
    assert "lower --learning_rate (now 1e+30)" in lines[0]
    assert set(saved) <= set(os.listdir(workdir / "saved"))


def test_option_known_to_one_compared_model_is_reported(monkeypatch, capsys, toy_config, workdir):
    code, out, err = cli(monkeypatch, capsys, dict(toy_config, sampling_steps=2), "--compare=DiffuRec,SASRec",
                         "--seeds=1", "--output_dir=out", "--lambda_uncertainty=0.01", "--popularity_floor=False")
    assert code == 0, err
    md = (workdir / "out" / "comparison.md").read_text()
    assert "--lambda_uncertainty (ignored by SASRec)" in md
    code, _, err = cli(monkeypatch, capsys, toy_config, "--compare=DiffuRec,SASRec", "--learning_rat=1")
    assert_one_line(code, err, "Unknown option --learning_rat")


def test_diffuasr_reads_sequences_from_recboles_split_with_tied_timestamps(toy_config, workdir):
    """Equal timestamps inside a user's sequence: the order is RecBole's own (the split's), not a re-sort."""
    from recbole_diffusion.augmentation.pipeline import SourceData

    folder = workdir / "ties" / "ties"
    folder.mkdir(parents=True)
    rows = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(12):
        for k in range(7):
            rows.append(f"u{u}\ti{(u * 3 + k * 5) % 17 + 1}\t{k // 3}")  # three items share each timestamp
    (folder / "ties.inter").write_text("\n".join(rows) + "\n")
    config = Config(model="SASRec", config_dict=dict(toy_config, dataset="ties", data_path=str(workdir / "ties")))
    source = SourceData(config)
    users, history, length, target = source.splits["test"]
    for user, items, count, item in zip(users, history, length, target):
        sequence = source.items[source.start[user]: source.start[user] + source.length[user]]
        assert np.array_equal(sequence, np.append(items[:count], item))
    train_user, _, _, train_target = source.splits["train"]
    for user in np.unique(train_user):
        sequence = source.items[source.start[user]: source.start[user] + source.train_length[user]]
        assert np.array_equal(sequence[1:], train_target[train_user == user])


def test_diffuasr_source_on_ml100k_with_its_ties(toy_config, workdir):
    """ml-100k: half of its rows share a (user, timestamp) with another; the source data builds."""
    from recbole_diffusion.augmentation.pipeline import SourceData

    config = Config(model="SASRec", dataset="ml-100k", config_dict={"state": "ERROR", "show_progress": False})
    source = SourceData(config)
    assert source.length.sum() == 100000 and (source.train_length[source.train_length > 0] >= 2).all()
