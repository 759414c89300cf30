"""DiffuASR: the SU-Net, the guidance strategies, and the augmented dataset it writes (loaded back by RecBole)."""

import os
import shutil
import sys
from collections import defaultdict

import numpy as np
import pytest
import torch
import yaml

from conftest import TINY, write_toy_dataset
from recbole_diffusion.augmentation.diffuasr import DiffuASR
from recbole_diffusion.augmentation.pipeline import (
    MANIFEST,
    NOTE,
    NOTE_AUGMENTED,
    SourceData,
    augment_dataset,
    augmentation_config,
    diffuasr_yaml,
    generator_settings,
    train_generator,
)
from recbole_diffusion.augmentation.sunet import SequentialUNet
from recbole_diffusion.cli import entry_point
from recbole_diffusion.config import Config
from recbole_diffusion.data import create_dataset, data_preparation

M = 3
GENERATOR = dict(aug_num=M, aug_hidden_size=16, aug_unet_channels=8, aug_channel_mult=[1, 2], aug_num_res_blocks=1,
                 aug_epochs=2, aug_batch_size=32, aug_sampling_steps=2)
SASREC = dict(TINY, **GENERATOR)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A scratch directory with the toy dataset, sys.argv free of pytest's arguments (RecBole reads them)."""
    path = tmp_path_factory.mktemp("diffuasr")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(path)
        mp.setattr(sys, "argv", ["pytest"])
        write_toy_dataset(str(path / "data"))
        yield path


def augment(root, **overrides):
    return augment_dataset(augmentation_config("SASRec", "toy", config_dict=dict(SASREC, data_path=str(root),
                                                                                   **overrides)))


@pytest.fixture(scope="module")
def augmented(scratch):
    return augment(scratch / "data")


def tokens(dataset, field, ids):
    return [str(t) for t in dataset.id2token(field, np.asarray(ids))]


def samples(dataset, rows):
    """[(user token, history tokens, target token)] of an Interaction of sequential samples."""
    out = []
    for u, h, n, y in zip(rows["user_id"].numpy(), rows["item_id_list"].numpy(), rows["item_length"].numpy(),
                          rows["item_id"].numpy()):
        out.append((tokens(dataset, "user_id", [u])[0], tuple(tokens(dataset, "item_id", h[:n])),
                    tokens(dataset, "item_id", [y])[0]))
    return out


def load(dataset, **config_dict):
    config = Config(model="SASRec", dataset=dataset, config_dict=dict(SASREC, **config_dict))
    ds = create_dataset(config)
    return ds, data_preparation(config, ds)


def eval_samples(dataset, loader):
    """Every (user, history, target) a valid/test loader serves, keyed by user."""
    out = {}
    for batch in loader:
        for user, history, target in samples(dataset, batch[0]):
            assert user not in out
            out[user] = (history, target)
    return out


def generated_items(augmentation):
    with open(os.path.join(augmentation.folder, f"{augmentation.name}.augment")) as f:
        next(f)
        return {user: items.split(" ") for user, items in (line.rstrip("\n").split("\t") for line in f)}


# --------------------------------------------------------------------------------------------- the network
def test_sunet_paper_shape_and_other_sides():
    """The paper's SU-Net (M = 10, d = 64 as 8 x 8, ch 8, [1, 2, 2, 2]) and a side that is not a power of two."""
    for M_, d, mult in ((10, 64, [1, 2, 2, 2]), (4, 36, [1, 2, 2])):
        net = SequentialUNet(M_, d, channels=8, channel_mult=mult, num_res_blocks=2)
        x = torch.randn(3, M_, d)
        assert net(x, torch.tensor([0.0, 500.0, 999.0]), torch.randn(3, d)).shape == (3, M_, d)


def generator_settings_for(guidance, **overrides):
    """The yaml's defaults with the tiny network, as a plain dict (what the pipeline hands the generator)."""
    with open(diffuasr_yaml()) as f:
        settings = yaml.safe_load(f)
    settings.update(GENERATOR, aug_guidance=guidance, aug_seed=0, aug_p_uncond=0.5, **overrides)
    return settings


@pytest.mark.parametrize("guidance", ["cf", "cg"])
def test_every_parameter_learns(guidance):
    torch.manual_seed(0)
    model = DiffuASR(generator_settings_for(guidance), n_items=12)
    loss = model.calculate_loss(torch.randint(1, 12, (6, M)), torch.randint(0, 12, (6, 5)))
    loss.backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not unused, unused


def test_classifier_guidance_steers_toward_the_guidance():
    """eps^ = eps - sqrt(1 - abar_t) s grad log p: the DDIM step then moves x along +grad log p(y | x_t, g)
    (the official code's sign moves it away), by an amount that depends on t through abar_t (not abar_0)."""
    torch.manual_seed(0)
    model = DiffuASR(generator_settings_for("cg", aug_guidance_scale=3.0), n_items=12).eval()
    x_t, guidance = torch.randn(4, M, 16), torch.randn(4, 16)
    for step, prev in ((800, 400), (300, 100)):
        t, t_prev = torch.full((4,), step), torch.full((4,), prev)
        x_in = x_t.clone().requires_grad_(True)
        grad = torch.autograd.grad(model.classifier_log_prob(x_in, t, guidance).sum(), x_in)[0]
        eps = model.noise_prediction(x_t, t, guidance).detach()
        guided = model.guided_noise(x_t, t, guidance).detach()
        sigma = (1 - model.diffusion.alphas_cumprod[step]).sqrt()
        torch.testing.assert_close(guided, eps - sigma * 3.0 * grad)
        moved = model.diffusion.ddim_step(guided, x_t, t, t_prev) - model.diffusion.ddim_step(eps, x_t, t, t_prev)
        assert ((moved * grad).flatten(1).sum(1) > 0).all()


def test_classifier_free_guidance_is_one_plus_w():
    torch.manual_seed(0)
    model = DiffuASR(generator_settings_for("cf", aug_guidance_scale=2.0), n_items=12).eval()
    x_t, t, guidance = torch.randn(2, M, 16), torch.tensor([10, 900]), torch.randn(2, 16)
    cond = model.noise_prediction(x_t, t, guidance)
    uncond = model.noise_prediction(x_t, t, model.null_guidance.expand(2, -1))
    torch.testing.assert_close(model.guided_noise(x_t, t, guidance), 3 * cond - 2 * uncond)


def test_generator_loss_falls(scratch):
    config = augmentation_config("SASRec", "toy", config_dict=dict(SASREC, data_path=str(scratch / "data")))
    source = SourceData(config)
    _, prefix, guidance = source.generator_examples(M, 200)
    settings = dict(generator_settings(config), aug_epochs=12, aug_stopping_step=100)
    _, losses = train_generator(settings, source.n_items, prefix, guidance, "cpu")
    assert len(losses) == 12 and np.mean(losses[-3:]) < 0.8 * losses[0], losses


# --------------------------------------------------------------------------------------------- the files
def test_augmented_files_load_and_keep_every_original_sample(scratch, augmented):
    original, (o_train, o_valid, o_test) = load("toy", data_path=str(scratch / "data"))
    aug, (a_train, a_valid, a_test) = load(augmented.name, **augmented.overrides)
    assert augmented.folder == str(scratch / "data" / augmented.name) and augmented.name.startswith("toy-diffuasr-")
    assert set(os.listdir(scratch / "data" / "toy")) == {"toy.inter"}  # the original folder is untouched

    # same items to rank, same validation and test cases: targets and histories
    assert sorted(map(str, original.field2id_token["item_id"])) == sorted(map(str, aug.field2id_token["item_id"]))
    assert eval_samples(aug, a_valid) == eval_samples(original, o_valid)
    assert eval_samples(aug, a_test) == eval_samples(original, o_test)
    assert len(eval_samples(original, o_test)) == 80

    # training: the same samples in the same order, each history = generated items + the original history
    generated = generated_items(augmented)
    before, after = defaultdict(list), defaultdict(list)
    for user, history, target in samples(original, o_train.dataset.inter_feat):
        before[user].append((history, target))
    for user, history, target in samples(aug, a_train.dataset.inter_feat):
        after[user].append((history, target))
    assert before.keys() == after.keys() == generated.keys()
    L = SASREC["MAX_ITEM_LIST_LENGTH"]
    for user, rows in before.items():
        assert [y for _, y in after[user]] == [y for _, y in rows]  # no generated item is ever a target
        for (history, _), (new_history, _) in zip(rows, after[user]):
            assert new_history == tuple(generated[user] + list(history))[-L:]
    # some histories were cut at MAX_ITEM_LIST_LENGTH, through the generated items
    assert any(len(h) == L and h[:M] != tuple(generated[u]) for u, rows in after.items() for h, _ in rows)


def test_generated_items_are_real_items(scratch, augmented):
    items = {line.split("\t")[1] for line in open(scratch / "data" / "toy" / "toy.inter").readlines()[1:]}
    generated = generated_items(augmented)
    assert all(len(g) == M and set(g) <= items for g in generated.values())
    assert augmented.manifest["augmented_users"] == len(generated) == 80
    assert augmented.manifest["note"] == NOTE


def test_same_seed_writes_the_same_files(scratch, augmented):
    other = scratch / "copy"
    shutil.copytree(scratch / "data" / "toy", other / "toy")
    again = augment(other)
    assert again.name == augmented.name
    for name in sorted(os.listdir(augmented.folder)):
        assert (other / augmented.name / name).read_bytes() == open(os.path.join(augmented.folder, name), "rb").read()
    assert len(os.listdir(augmented.folder)) == 5
    reseeded = augment(other, aug_seed=7)
    assert reseeded.name != augmented.name and generated_items(reseeded) != generated_items(augmented)


def test_paper_protocol_puts_the_generated_items_before_eval_histories_too(scratch, augmented):
    """aug_eval_histories=augmented: the same generator (same seed and settings but this key) and the same training
    file; each validation and test history is the generated items + the original history, cut to
    MAX_ITEM_LIST_LENGTH, and every target is the original one."""
    paper = augment(scratch / "data", aug_eval_histories="augmented")
    assert paper.name != augmented.name and paper.manifest["note"] == NOTE_AUGMENTED
    assert generated_items(paper) == generated_items(augmented)
    train_rows = [open(os.path.join(a.folder, f"{a.name}.train.inter")).read().splitlines()[1:]
                  for a in (paper, augmented)]
    assert train_rows[0] == train_rows[1]
    original, (_, o_valid, o_test) = load("toy", data_path=str(scratch / "data"))
    aug, (_, a_valid, a_test) = load(paper.name, **paper.overrides)
    generated, L = generated_items(paper), SASREC["MAX_ITEM_LIST_LENGTH"]
    for before, after in ((eval_samples(original, o_valid), eval_samples(aug, a_valid)),
                          (eval_samples(original, o_test), eval_samples(aug, a_test))):
        assert before.keys() == after.keys() and len(after) == 80
        for user, (history, target) in before.items():
            assert after[user] == (tuple(generated[user] + list(history))[-L:], target)


def test_short_users_only_with_classifier_guidance(scratch):
    augmentation = augment(scratch / "data", aug_users="short", aug_short_length=8, aug_guidance="cg")
    lengths = defaultdict(int)
    for line in open(scratch / "data" / "toy" / "toy.inter").readlines()[1:]:
        lengths[line.split("\t")[0]] += 1
    generated = generated_items(augmentation)
    assert set(generated) == {u for u, n in lengths.items() if n <= 8} and 0 < len(generated) < 80
    assert augmentation.manifest["settings"]["aug_guidance"] == "cg"


# --------------------------------------------------------------------------------------------- the CLI
def cli(monkeypatch, capsys, root, *args):
    """The CLI in-process; the toy dataset has no yaml, so every column is loaded without --load_col (which the
    augmented files would refuse: it outranks their own configuration)."""
    overrides = [f"--{k}={v!r}" if isinstance(v, (dict, list)) else f"--{k}={v}" for k, v in SASREC.items()
                 if k not in ("dataset", "load_col") and not any(a.startswith(f"--{k}=") for a in args)]
    model = [] if any(a.startswith("--model=") for a in args) else ["--model=SASRec"]
    argv = ["run_recbole_diffusion.py", "--dataset=toy", f"--data_path={root}", *model, *overrides, *args]
    monkeypatch.setattr(sys, "argv", argv)
    code = entry_point(argv[1:])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_reports_original_and_augmented(monkeypatch, capsys, scratch, workdir):
    root = str(scratch / "data")
    code, out, err = cli(monkeypatch, capsys, root, "--augment=DiffuASR", f"--checkpoint_dir={workdir}")
    assert code == 0, err
    report = out[out.index("SASRec on toy: original data against data augmented by DiffuASR"):]
    assert NOTE in report and "augmented files: " in report
    assert report.splitlines()[3].split() == ["metric", "valid", "valid", "aug", "test", "test", "aug", "test",
                                              "change"]
    assert [line.split()[0] for line in report.splitlines()[4:10]] == [
        "hit@5", "hit@10", "hit@20", "ndcg@5", "ndcg@10", "ndcg@20"]
    assert os.path.isfile(os.path.join(root, report.splitlines()[-1].split(" ")[-1].split("/")[-1], MANIFEST))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--augment=DifuASR"], "Unknown augmenter 'DifuASR'. Did you mean 'DiffuASR'?"),
        (["--augment=DiffuASR", "--aug_num=10"],
         "aug_num=10 is too large for 'toy': the generator learns from training sequences of at least aug_num + 1 "
         "= 11 items"),
        (["--augment=DiffuASR", "--aug_hidden_size=15"], "aug_hidden_size=15 for DiffuASR: must be a perfect square"),
        (["--augment=DiffuASR", "--aug_channel_mult=[1,2,2,2]"], "use at most 3 levels"),
        (["--augment=DiffuASR", "--aug_guidance=cfg"], "aug_guidance='cfg' for DiffuASR: must be one of cf, cg."),
        (["--augment=DiffuASR", "--aug_eval_histories=paper"],
         "aug_eval_histories='paper' for DiffuASR: must be one of original, augmented."),
        (["--augment=DiffuASR", "--aug_unet_channels=12"], "must be a multiple of 8"),
        (["--augment=DiffuASR", "--aug_diffusion_steps=20", "--aug_sampling_steps=2"],
         "Fix it with --aug_diffusion_steps/--aug_noise_schedule"),
        (["--augment=DiffuASR", "--model=BPR"], "DiffuASR augments the sequences of sequential models; 'BPR' is not"),
        (["--augment=DiffuASR", "--rm_dup_inter=first"], "--rm_dup_inter='first' cannot be used with --augment"),
    ],
)
def test_bad_input_gives_one_clear_line(monkeypatch, capsys, scratch, workdir, args, message):
    code, _, err = cli(monkeypatch, capsys, str(scratch / "data"), *args)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err


def test_rounding_anchor_over_all_or_sampled_items():
    torch.manual_seed(0)
    model = DiffuASR(generator_settings_for("cf", aug_rounding_negatives=0), n_items=40)
    items = torch.randint(1, 40, (5, M))
    x0 = model.item_embedding(items)
    full = torch.nn.functional.cross_entropy(x0.reshape(-1, 16) @ model.item_embedding.weight[1:].t(),
                                             items.reshape(-1) - 1)
    torch.testing.assert_close(model.rounding_loss(x0, items), full)
    model.aug_rounding_negatives = 500  # more than there are items: every item
    torch.testing.assert_close(model.rounding_loss(x0, items), full)
    model.aug_rounding_negatives = 30  # sampled (with repeats, so some draws hit the target: masked)
    sampled = model.rounding_loss(x0, items)
    assert torch.isfinite(sampled) and 0 < sampled < full
