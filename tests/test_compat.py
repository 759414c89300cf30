"""RecBole 1.2.1 on today's numpy, pandas and Ray (issue 15): the data RecBole builds is right, not just loadable.

On pandas 3 without recbole_diffusion.compat's repairs, the item_length and missing-value tests below fail (the
row count in every item_length; NaN kept); on pandas 2 the repairs are not applied and the tests pass as well.
"""

import numpy as np
import pandas as pd
import pytest
import torch

from recbole_diffusion import compat
from recbole_diffusion.config import Config
from recbole_diffusion.data import create_dataset, data_preparation


def test_numpy_aliases_that_recboles_config_reads():
    for alias in ("float_", "complex_", "unicode_"):
        assert hasattr(np, alias)
    assert np.float_ is np.float64


def test_item_lengths_are_the_history_lengths(toy_config):
    """pandas 3's Series.agg(len) returns the row count: every item_length would be the number of rows."""
    config = Config(model="SASRec", config_dict=toy_config)
    train, valid, test = data_preparation(config, create_dataset(config))
    for loader in (train, valid, test):
        feat = loader._dataset.inter_feat
        lengths = feat["item_length"]
        assert torch.equal(lengths, (feat["item_id_list"] > 0).sum(1))
        assert lengths.max() <= config["MAX_ITEM_LIST_LENGTH"] and len(set(lengths.tolist())) > 1


def test_item_lengths_of_a_pre_split_dataset(toy_config, workdir):
    """A pre-split sequential dataset (benchmark_filename): RecBole computes item_length with Series.agg(len),
    which pandas 3 turned into the row count, silently."""
    folder = workdir / "presplit" / "presplit"
    folder.mkdir(parents=True)
    histories = {"train": [["i1"], ["i1", "i2"], ["i3", "i4", "i5"]], "valid": [["i1", "i2", "i3"]],
                 "test": [["i2", "i3", "i4", "i5"], ["i5"]]}
    for part, rows in histories.items():
        lines = ["user_id:token\titem_id_list:token_seq\titem_id:token"]
        lines += [f"u{n}\t{' '.join(history)}\ti{n % 5 + 1}" for n, history in enumerate(rows)]
        (folder / f"presplit.{part}.inter").write_text("\n".join(lines) + "\n")
    config = Config(model="SASRec", config_dict=dict(toy_config, dataset="presplit",
                                                    data_path=str(workdir / "presplit"), load_col=None,
                                                    benchmark_filename=["train", "valid", "test"]))
    train, valid, test = data_preparation(config, create_dataset(config))
    for loader, rows in zip((train, valid, test), histories.values()):
        assert loader._dataset.inter_feat["item_length"].tolist() == [len(history) for history in rows]


def test_missing_values_are_filled_and_empty_sequences_load(toy_config, workdir):
    """pandas 3 copy-on-write made RecBole's fillna(inplace=True) a no-op: NaN stayed in float fields, and an
    empty token_seq cell stayed NaN and broke loading."""
    folder = workdir / "holes" / "holes"
    folder.mkdir(parents=True)
    rows = ["user_id:token\titem_id:token\ttimestamp:float\trating:float"]
    for u in range(10):
        for k in range(5):
            rating = "" if (u + k) % 4 == 0 else str(1 + (u * k) % 5)
            rows.append(f"u{u}\ti{(u + k) % 7 + 1}\t{k}\t{rating}")
    (folder / "holes.inter").write_text("\n".join(rows) + "\n")
    items = ["item_id:token\tgenre:token_seq"] + [f"i{i}\t{'' if i % 3 == 0 else 'a b'}" for i in range(1, 8)]
    (folder / "holes.item").write_text("\n".join(items) + "\n")
    config = Config(model="BPR", config_dict=dict(toy_config, dataset="holes", data_path=str(workdir / "holes"),
                                                  load_col=None))
    dataset = create_dataset(config)
    ratings = dataset.inter_feat["rating"].to_numpy()
    assert not np.isnan(ratings).any()
    raw = pd.read_csv(folder / "holes.inter", sep="\t")["rating:float"]
    assert np.isclose(ratings.max(), raw.max()) and np.isclose(ratings.min(), raw.min())
    items = dataset.item_feat
    empty = [dataset.id2token("item_id", item) for item, genre in zip(items["item_id"], items["genre"])
             if item > 0 and len(genre) == 0]
    assert sorted(empty) == ["i3", "i6"]


def test_recbole_repairs_refuse_another_recbole(monkeypatch):
    import recbole

    monkeypatch.setattr(recbole, "__version__", "1.3.0")
    with pytest.raises(compat.CompatibilityError, match="written for|repairs RecBole 1.2.1"):
        compat._rewrite_method("recbole.data.dataset.dataset:Dataset._remap", ((".agg(len)", ".map(len)"),))
    monkeypatch.setattr(recbole, "__version__", "1.2.1")
    with pytest.raises(compat.CompatibilityError, match="is not in its source"):
        compat._rewrite_method("recbole.data.dataset.dataset:Dataset._remap", (("no such text", "x"),))


def test_repairs_follow_the_installed_pandas():
    from recbole.data.dataset import Dataset, SequentialDataset

    repaired = getattr(SequentialDataset._benchmark_presets, "_recbole_diffusion_repaired", False)
    assert repaired == compat.pandas_agg_len_is_scalar()
    assert getattr(Dataset._fill_nan, "_recbole_diffusion_repaired", False) == compat.pandas_chained_inplace_is_noop()
    assert compat.pandas_agg_len_is_scalar() == (int(pd.__version__.split(".")[0]) >= 3)


def test_ray_api_is_one_line_or_the_other():
    pytest.importorskip("ray")
    import ray

    from recbole_diffusion.ray_api import api

    line = api().line
    major, minor = (int(x) for x in ray.__version__.split(".")[:2])
    assert line == ("air" if (major, minor) < (2, 10) else "current")
    for name in ("report", "get_checkpoint", "trial_dir", "Checkpoint", "RunConfig", "FailureConfig",
                 "CheckpointConfig"):
        assert getattr(api(), name) is not None


def test_missing_recbole_is_one_line(monkeypatch, capsys):
    """RecBole is installed on its own (--no-deps): without it the CLI says how to install it, in one line."""
    from recbole_diffusion import cli

    def main(argv=None):
        raise ModuleNotFoundError("No module named 'recbole'", name="recbole")

    monkeypatch.setattr(cli, "main", main)
    code = cli.entry_point(["--model=DiffuRec"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install --no-deps recbole==1.2.1" in err and err.count("\n") == 1
