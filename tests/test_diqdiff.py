"""DiQDiff on the toy dataset: it trains, ranks, scores a user the same whatever the batch, and refuses bad
hyperparameters."""

import math

import pytest
import torch
from test_cli import test_bad_input_gives_one_clear_line as expect_one_clear_line

from recbole_diffusion import objective_function
from recbole_diffusion.config import Config
from recbole_diffusion.model.layers import left_pad
from recbole_diffusion.quick_start import build

TINY_DIQDIFF = {"codebook_size": 4}


def _build(config_dict, **overrides):
    config = Config(model="DiQDiff", config_dict={**config_dict, **TINY_DIQDIFF, **overrides})
    return build(config)


def test_loss_falls_and_model_learns_the_ring(toy_config):
    _, train_data, valid_data, _, _, trainer = _build(
        toy_config, epochs=10, learning_rate=0.01, eval_step=10, stopping_step=100
    )
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    losses = [trainer.train_loss_dict[e] for e in sorted(trainer.train_loss_dict)]
    assert losses[-1] < 0.5 * losses[0]
    result = trainer.evaluate(valid_data, load_best_model=False)
    assert all(math.isfinite(v) for v in result.values())
    # 30 items: random ranking gives Hit@5 ~ 0.17; the ring is learnable
    assert result["hit@5"] > 0.5


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_full_ranking_metrics_are_finite(toy_config, sampler):
    result = objective_function(config_dict=dict(toy_config, **TINY_DIQDIFF, model="DiQDiff", sampler=sampler),
                                saved=False)
    for split in ("best_valid_result", "test_result"):
        assert list(result[split]) == ["hit@5", "hit@10", "hit@20", "ndcg@5", "ndcg@10", "ndcg@20"]
        assert all(math.isfinite(v) and 0 <= v <= 1 for v in result[split].values())


def test_left_pad():
    seq = torch.tensor([[3, 4, 5, 0, 0], [1, 2, 3, 4, 5], [7, 0, 0, 0, 0]])
    expected = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5], [0, 0, 0, 0, 7]])
    assert torch.equal(left_pad(seq, torch.tensor([3, 5, 1])), expected)


def test_scores_do_not_depend_on_the_batch(toy_config):
    """A user's scores are the same alone, inside the batch, and inside a reordered half of it.

    The official code recomputes the codebook from each test batch, so there the same history gets other scores
    in another batch. To compare the whole generation, x_t pathway included, the only other source of
    difference is removed: the chain is deterministic DDIM (eta 0) and its start x_T is fixed per user in
    evaluation (the base class's start_noise), so a user gets the same x_T wherever it sits.
    lambda_xt is raised to 0.1 so that x_T visibly moves the scores (checked at the end). Each call sorts its
    batch into length buckets cut to their own longest sequence, so bucketing and trimming are exercised too.
    """
    _, train_data, valid_data, test_data, model, trainer = _build(
        toy_config, epochs=2, learning_rate=0.01, sampler="ddim", sampling_steps=4, ddim_eta=0.0, lambda_xt=0.1,
    )
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    model.eval()
    batch = next(iter(test_data))[0]

    def scores(rows):
        with torch.no_grad():
            return model.full_sort_predict(batch[rows])

    every = torch.arange(len(batch))
    full = scores(every)
    for user in (0, 7, len(batch) - 1):
        assert torch.allclose(scores(torch.tensor([user])), full[user:user + 1], atol=1e-5)
    half = every.flip(0)[: len(batch) // 2]
    assert torch.allclose(scores(half), full[half], atol=1e-5)
    # the test means something: users choose different codes, and x_T moves the output
    with torch.no_grad():
        seq = left_pad(batch["item_id_list"], batch["item_length"])
        chosen = model.code_choice(model.approximator.history(model.item_embedding(seq)), seq).argmax(-1)
        assert len(set(chosen.tolist())) > 1
    model._start_noise_table = torch.randn_like(model._start_noise_table)  # other starts for every user
    assert not torch.allclose(scores(every), full, atol=1e-4)


def test_code_choice_is_hard_in_training_and_argmax_in_evaluation(toy_config):
    _, _, _, test_data, model, _ = _build(toy_config, codebook_size=6)
    batch = next(iter(test_data))[0]
    seq = left_pad(batch["item_id_list"], batch["item_length"])
    history = model.approximator.history(model.item_embedding(seq))
    choice = model.code_choice(history, seq)
    assert choice.shape == (len(batch), 6) and torch.equal(choice.sum(-1), torch.ones(len(batch)))
    # straight-through: the selector gets a gradient through the hard choice
    (choice * torch.arange(6.0)).sum().backward()
    assert model.code_selector.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        history = model.approximator.history(model.item_embedding(seq))
        first, second = model.code_choice(history, seq), model.code_choice(history, seq)
    assert torch.equal(first, second)


def test_contrastive_loss_pushes_generations_apart(toy_config):
    _, _, _, _, model, _ = _build(toy_config)
    same = torch.ones(8, model.hidden_size)
    apart = torch.eye(8, model.hidden_size)
    # identical generations: uniform softmax over the batch, log 8; orthogonal ones: almost 0
    assert model.contrastive_loss(same).item() == pytest.approx(math.log(8), rel=1e-5)
    assert model.contrastive_loss(apart).item() < 1e-3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--codebook_size=0"], "codebook_size=0 for DiQDiff: must be a positive integer"),
        (["--gumbel_temperature=0"], "gumbel_temperature=0 for DiQDiff: must be a number > 0"),
        (["--contra_temperature=-0.07"], "contra_temperature=-0.07 for DiQDiff: must be a number > 0"),
        (["--lambda_contra=-1"], "lambda_contra=-1 for DiQDiff: must be a non-negative number"),
        (["--lambda_intent=-0.4"], "lambda_intent=-0.4 for DiQDiff: must be a non-negative number"),
        (["--lambda_history=-1"], "lambda_history=-1 for DiQDiff: must be a non-negative number"),
        (["--emb_dropout=1.0"], "emb_dropout=1.0 for DiQDiff: must be a number in [0, 1)"),
        (["--attention_mask=oficial"], "attention_mask='oficial' for DiQDiff: must be one of key_padding, official."),
    ],
)
def test_bad_hyperparameter_gives_one_clear_line(monkeypatch, capsys, toy_config, args, message):
    expect_one_clear_line(monkeypatch, capsys, toy_config, ["--model=DiQDiff", *args], message)
