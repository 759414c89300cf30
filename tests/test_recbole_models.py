"""RecBole's own models through our pipeline: negative sampling follows the model and its loss (issue 17)."""

import pytest
import yaml
from test_cli import cli

from recbole_diffusion import objective_function
from recbole_diffusion.compare import compare
from recbole_diffusion.config import Config


@pytest.mark.parametrize("model, loss, sampled", [
    ("SASRec", "CE", False), ("SASRec", "BPR", True), ("GRU4Rec", "BPR", True), ("Caser", "BPR", True),
    ("NextItNet", "BPR", True), ("BERT4Rec", "BPR", True), ("DiffuRec", "CE", False),
])
def test_negative_sampling_follows_the_loss(toy_config, model, loss, sampled):
    config = Config(model=model, config_dict=dict(toy_config, loss_type=loss))
    neg = config["train_neg_sample_args"]
    assert (neg is not None and neg["distribution"] == "uniform" and neg["sample_num"] == 1) == sampled


def test_bpr_sequential_models_train_and_rank(toy_config):
    for model in ("SASRec", "GRU4Rec"):
        result = objective_function(config_dict=dict(toy_config, model=model, loss_type="BPR", hidden_size=16,
                                                     embedding_size=16), saved=False)
        assert 0 <= result["test_result"]["ndcg@10"] <= 1


def test_user_negative_sampling_wins(toy_config):
    args = {"distribution": "popularity", "sample_num": 2}
    config = Config(model="SASRec", config_dict=dict(toy_config, loss_type="BPR", train_neg_sample_args=args))
    assert config["train_neg_sample_args"]["distribution"] == "popularity"
    assert config["train_neg_sample_args"]["sample_num"] == 2


def test_cli_sasrec_bpr_and_bpr_ablation_in_compare(monkeypatch, capsys, toy_config, workdir):
    code, out, err = cli(monkeypatch, capsys, toy_config, "--model=SASRec", "--loss_type=BPR")
    assert code == 0, err
    assert "ndcg@10" in out
    bpr = workdir / "sasrec_bpr.yaml"
    bpr.write_text(yaml.safe_dump({"loss_type": "BPR"}))
    monkeypatch.setattr("sys.argv", ["pytest"])
    result = compare(["SASRec", "DiffuRec"], "toy", seeds=1, config_dict=dict(toy_config, sampling_steps=2),
                     model_config_files={"SASRec": str(bpr)}, output_dir="out", popularity_floor=False)
    assert [r["model"] for r in result["runs"]] == ["SASRec", "DiffuRec"]


@pytest.mark.parametrize("model, extra", [
    ("Pop", {}), ("BPR", {}), ("GRU4Rec", {"train_neg_sample_args": None}),
    ("SASRec", {"loss_type": "BPR"}), ("NextItNet", {"train_neg_sample_args": None}),
])
def test_zoo_subset_matches_recbole(toy_config, model, extra):
    """The representative subset of benchmarks/recbole_zoo.py: RecBole's objective_function and ours, the same
    config_dict, give the same test metrics (one seed, reproducible)."""
    from recbole.quick_start import objective_function as recbole_objective

    config = dict(toy_config, model=model, embedding_size=16, metrics=["Recall", "NDCG"], topk=[10],
                  valid_metric="NDCG@10", reproducibility=True, **extra)
    theirs = recbole_objective(config_dict=dict(config), saved=False)
    ours = objective_function(config_dict=dict(config, length_buckets=0), saved=False)
    assert dict(theirs["test_result"]) == pytest.approx(dict(ours["test_result"]), abs=1e-4)
