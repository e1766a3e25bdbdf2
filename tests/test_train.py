import math

import numpy as np
import pytest
import torch

import token_data
import train
from checkpoint import load_checkpoint
from conftest import read_metrics, tiny_args, train_losses, val_ppls
from model import GPT, GPTConfig, MLP_TYPES
from settings import UserError, parse_args

TIMING_KEYS = {"tokens_per_s", "mfu"}


def run(data_root, out_dir, **overrides) -> list[dict]:
    train.train(parse_args(tiny_args(data_root, out_dir, **overrides)))
    return read_metrics(out_dir)


def test_schedule_endpoints():
    cfg = parse_args(["--learning_rate=1e-3", "--min_lr=1e-4", "--warmup_iters=100", "--max_iters=1000"])
    assert 0 < train.get_lr(0, cfg) < cfg.learning_rate
    assert train.get_lr(cfg.warmup_iters, cfg) == pytest.approx(cfg.learning_rate)
    assert train.get_lr(cfg.max_iters, cfg) == pytest.approx(cfg.min_lr)
    lrs = [train.get_lr(s, cfg) for s in range(cfg.warmup_iters, cfg.max_iters + 1)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # cosine decay never rises


def test_schedule_without_warmup():
    cfg = parse_args(["--warmup_iters=0", "--max_iters=10"])
    assert train.get_lr(0, cfg) == pytest.approx(cfg.learning_rate)


def test_batches_depend_only_on_seed_and_step():
    split = token_data.TokenSplit("train", ["train.bin"], [np.zeros(10_000, dtype=np.uint16)])
    a = split.sample_windows(seed=3, step=7, n_windows=16, block_size=32)
    b = split.sample_windows(seed=3, step=7, n_windows=16, block_size=32)
    c = split.sample_windows(seed=3, step=8, n_windows=16, block_size=32)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0
    assert a.max() <= 10_000 - 32 - 1


def test_eval_windows_are_consecutive_blocks():
    split = token_data.TokenSplit("val", ["val.bin"], [np.zeros(1000, dtype=np.uint16)])
    offsets = split.eval_windows(eval_tokens=300, block_size=64)
    np.testing.assert_array_equal(offsets, [0, 64, 128, 192])
    whole = split.eval_windows(eval_tokens=0, block_size=64)
    assert len(whole) == 999 // 64


def test_val_ppl_at_fixed_steps_with_checkpoints(data_root, tmp_path):
    records = run(data_root, tmp_path, max_iters=24, eval_steps=[10, 24], log_interval=4)
    ppl = val_ppls(records)
    assert sorted(ppl) == [10, 24]
    for r in records:
        if "val_ppl" in r:
            assert r["val_ppl"] == pytest.approx(math.exp(r["val_loss"]))
            assert len(r["alpha"]) == 2
            assert len(r["beta"]) == 2
    assert (tmp_path / "ckpt_000010.pt").exists()
    assert (tmp_path / "ckpt_000024.pt").exists()
    assert load_checkpoint(str(tmp_path / "ckpt.pt"))["step"] == 24
    assert sorted(train_losses(records)) == [4, 8, 12, 16, 20, 24]
    train_line = next(r for r in records if "train_loss" in r)
    assert {"step", "train_loss", "lr", "tokens", "tokens_per_s", "mfu"} <= set(train_line)


def test_checkpoint_evaluates_reproducibly(data_root, tmp_path):
    records = run(data_root, tmp_path, max_iters=12, eval_steps=[12])
    cfg = parse_args(tiny_args(data_root, tmp_path))
    ckpt = load_checkpoint(str(tmp_path / "ckpt_000012.pt"))
    model = GPT(GPTConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    data_dir = str(data_root / "chars")
    val = token_data.open_split(data_dir, token_data.load_meta(data_dir, "chars"), "val", cfg.block_size, "chars")
    offsets = val.eval_windows(cfg.eval_tokens, cfg.block_size)
    dist_info = train.Distributed("cpu")
    first = train.evaluate(model, val, offsets, cfg, dist_info, torch.autocast("cpu", enabled=False))
    second = train.evaluate(model, val, offsets, cfg, dist_info, torch.autocast("cpu", enabled=False))
    assert first == second
    assert first == pytest.approx(records[-1]["val_loss"], rel=1e-6)


def test_same_seed_writes_identical_metrics(data_root, tmp_path):
    a = run(data_root, tmp_path / "a", max_iters=8, eval_steps=[4, 8], dropout=0.1)
    b = run(data_root, tmp_path / "b", max_iters=8, eval_steps=[4, 8], dropout=0.1)
    strip = lambda records: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]
    assert strip(a) == strip(b)
    c = run(data_root, tmp_path / "c", max_iters=8, eval_steps=[4, 8], dropout=0.1, seed=2)
    assert strip(a) != strip(c)


@pytest.mark.parametrize("mlp", MLP_TYPES)
def test_loss_falls_for_each_mlp(data_root, tmp_path, mlp):
    losses = list(train_losses(run(data_root, tmp_path, mlp=mlp, max_iters=30)).values())
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5


def test_dynact_parameters_move(data_root, tmp_path):
    records = run(data_root, tmp_path, max_iters=30, eval_steps=[30])
    last = records[-1]
    assert any(a != 1.0 for a in last["alpha"]) and any(b != 0.0 for b in last["beta"])


def test_gelu_run_logs_no_alpha(data_root, tmp_path):
    records = run(data_root, tmp_path, mlp="gelu", max_iters=4, eval_steps=[4])
    assert "alpha" not in records[-1]


def test_existing_run_is_not_overwritten(data_root, tmp_path):
    run(data_root, tmp_path, max_iters=4)
    before = (tmp_path / "ckpt.pt").read_bytes()
    with pytest.raises(UserError, match="already holds a run.*--overwrite=True"):
        run(data_root, tmp_path, max_iters=4, seed=5)
    assert (tmp_path / "ckpt.pt").read_bytes() == before
    run(data_root, tmp_path, max_iters=4, seed=5, overwrite=True)
    assert load_checkpoint(str(tmp_path / "ckpt.pt"))["train_config"]["seed"] == 5


def test_missing_data_folder_names_prepare_command(tmp_path):
    with pytest.raises(UserError, match="python data/prepare.py nothing_here"):
        run(tmp_path, tmp_path / "out", dataset="nothing_here")


def test_checkpoint_contents(data_root, tmp_path):
    run(data_root, tmp_path, max_iters=4)
    ckpt = load_checkpoint(str(tmp_path / "ckpt.pt"))
    assert {"model", "optimizer", "scaler", "model_config", "train_config", "tokenizer", "step", "best_val_loss", "rng"} <= set(ckpt)
    assert ckpt["tokenizer"]["kind"] == "char"
    assert ckpt["train_config"]["max_iters"] == 4
    assert ckpt["model_config"]["mlp"] == "dynactglu"


def test_wandb_failure_only_warns(data_root, tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    records = run(data_root, tmp_path, max_iters=4, eval_steps=[4], wandb_log=True)
    assert 4 in val_ppls(records)
    warnings = [l for l in capsys.readouterr().err.splitlines() if l.startswith("warning: wandb")]
    assert len(warnings) == 1
