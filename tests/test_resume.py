import json
import os
import signal
import subprocess
import time

import pytest
import torch

import checkpoint
import train
from checkpoint import FORMAT, load_checkpoint
from conftest import PYTHON, REPO, read_metrics, run_train_cli, subprocess_env, tiny_args, train_losses, val_ppls
from settings import UserError, parse_args


def run(data_root, out_dir, **overrides) -> list[dict]:
    train.train(parse_args(tiny_args(data_root, out_dir, **overrides)))
    return read_metrics(out_dir)


def steps_are_unique(records: list[dict]) -> bool:
    train_steps = [r["step"] for r in records if "train_loss" in r]
    eval_steps = [r["step"] for r in records if "val_loss" in r]
    return train_steps == sorted(set(train_steps)) and eval_steps == sorted(set(eval_steps))


# Settings shared by a straight 20-step run and a run stopped after 10 steps and resumed; the schedule
# ends at step 20 in both.
SCHEDULE = dict(lr_decay_iters=20, eval_steps=[5, 10, 20])


def test_resume_matches_straight_run(data_root, tmp_path):
    straight = run(data_root, tmp_path / "straight", max_iters=20, dropout=0.1, **SCHEDULE)
    run(data_root, tmp_path / "split", max_iters=10, dropout=0.1, lr_decay_iters=20, eval_steps=[5, 10])
    resumed = run(data_root, tmp_path / "split", max_iters=20, dropout=0.1, init_from="resume", **SCHEDULE)
    assert train_losses(resumed) == train_losses(straight)
    assert val_ppls(resumed) == val_ppls(straight)
    assert sorted(val_ppls(resumed)) == [5, 10, 20]
    assert steps_are_unique(resumed)
    a = load_checkpoint(str(tmp_path / "straight" / "ckpt.pt"))["model"]
    b = load_checkpoint(str(tmp_path / "split" / "ckpt.pt"))["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_resume_drops_metrics_after_checkpoint(data_root, tmp_path):
    run(data_root, tmp_path, max_iters=10, lr_decay_iters=20, eval_steps=[10])
    # lines an interrupted run wrote after its last checkpoint
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 11, "train_loss": 9.0}) + "\n")
        f.write(json.dumps({"step": 12, "train_loss": 9.0}) + "\n")
    records = run(data_root, tmp_path, max_iters=14, lr_decay_iters=20, eval_steps=[10, 14], init_from="resume")
    assert 9.0 not in train_losses(records).values()
    assert steps_are_unique(records)
    assert sorted(train_losses(records)) == list(range(1, 15))


def test_failed_save_keeps_previous_checkpoint(data_root, tmp_path, monkeypatch):
    run(data_root, tmp_path, max_iters=10, lr_decay_iters=20, eval_steps=[10])
    before = (tmp_path / "ckpt.pt").read_bytes()
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"partial checkpoint bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        run(data_root, tmp_path, max_iters=20, lr_decay_iters=20, eval_steps=[10, 15, 20], init_from="resume")
    monkeypatch.setattr(checkpoint.torch, "save", real_save)

    assert (tmp_path / "ckpt.pt").read_bytes() == before
    assert load_checkpoint(str(tmp_path / "ckpt.pt"))["step"] == 10
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]
    records = run(data_root, tmp_path, max_iters=20, lr_decay_iters=20, eval_steps=[10, 15, 20], init_from="resume")
    assert sorted(val_ppls(records)) == [10, 15, 20]
    assert steps_are_unique(records)


def test_sigterm_writes_checkpoint_and_resume_finishes(data_root, tmp_path):
    settings = dict(max_iters=400, eval_steps=[100, 400], eval_tokens=256)
    args = tiny_args(data_root, tmp_path / "stopped", **settings)
    proc = subprocess.Popen([PYTHON, str(REPO / "train.py"), *args], env=subprocess_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "stopped" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and '"train_loss"' in metrics.read_text():
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == train.EXIT_PREEMPTED, stderr
    stopped_at = load_checkpoint(str(tmp_path / "stopped" / "ckpt.pt"))["step"]
    assert 0 < stopped_at < 400
    assert "stopped by SIGTERM" in stdout
    events = [r for r in read_metrics(tmp_path / "stopped") if r.get("event") == "stopped"]
    assert events == [{"step": stopped_at, "event": "stopped", "signal": "SIGTERM"}]

    # both in subprocesses like the stopped run, so that all three use the same number of threads
    assert run_train_cli(tiny_args(data_root, tmp_path / "stopped", init_from="resume", **settings)).returncode == 0
    assert run_train_cli(tiny_args(data_root, tmp_path / "straight", **settings)).returncode == 0
    resumed = read_metrics(tmp_path / "stopped")
    straight = read_metrics(tmp_path / "straight")
    assert train_losses(resumed) == train_losses(straight)
    assert val_ppls(resumed) == val_ppls(straight)


def test_non_finite_loss_stops_and_keeps_finite_checkpoint(data_root, tmp_path):
    with pytest.raises(train.NonFiniteLossError, match=r"non-finite|became (nan|inf)") as info:
        run(data_root, tmp_path, max_iters=50, warmup_iters=0, learning_rate=1e30, min_lr=0.0,
            checkpoint_interval=1, eval_steps=[0])
    ckpt = load_checkpoint(str(tmp_path / "ckpt.pt"))
    assert f"(step {ckpt['step']})" in str(info.value)
    for name, tensor in ckpt["model"].items():
        assert torch.isfinite(tensor).all(), name


def test_non_finite_loss_cli_message(data_root, tmp_path):
    result = run_train_cli(tiny_args(data_root, tmp_path, max_iters=50, warmup_iters=0, learning_rate=1e30,
                                     min_lr=0.0, eval_steps=[0]))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert "last good checkpoint" in lines[0]


class NotPlainData:
    pass


def test_checkpoint_with_pickled_object_is_rejected(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": NotPlainData()}, path)
    with pytest.raises(UserError, match="objects other than tensors"):
        load_checkpoint(str(path))


def test_foreign_and_truncated_checkpoints_are_rejected(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="not written by this repo"):
        load_checkpoint(str(tmp_path / "foreign.pt"))
    checkpoint.save_checkpoint({"weights": torch.zeros(1000)}, str(tmp_path / "good.pt"))
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="unreadable or truncated"):
        load_checkpoint(str(tmp_path / "cut.pt"))


def test_keep_last_bounds_periodic_checkpoints(data_root, tmp_path):
    run(data_root, tmp_path, max_iters=12, checkpoint_interval=2, keep_last=2, eval_steps=[4])
    names = sorted(p for p in os.listdir(tmp_path) if p.endswith(".pt"))
    assert names == ["ckpt.pt", "ckpt_000004.pt", "ckpt_000012.pt", "ckpt_periodic_000008.pt", "ckpt_periodic_000010.pt"] or \
        names == ["ckpt.pt", "ckpt_000004.pt", "ckpt_periodic_000008.pt", "ckpt_periodic_000010.pt"]


def test_resume_with_other_model_settings_names_keys(data_root, tmp_path):
    run(data_root, tmp_path, max_iters=4)
    with pytest.raises(UserError, match="n_embd: checkpoint 32 vs now 64"):
        run(data_root, tmp_path, max_iters=8, n_embd=64, init_from="resume")


def test_resume_with_other_schedule_names_keys(data_root, tmp_path):
    run(data_root, tmp_path, max_iters=4)
    with pytest.raises(UserError, match="lr_decay_iters: checkpoint 4 vs now 8"):
        run(data_root, tmp_path, max_iters=8, init_from="resume")
    with pytest.raises(UserError, match="learning_rate: checkpoint 0.003 vs now 0.001"):
        run(data_root, tmp_path, max_iters=8, lr_decay_iters=4, learning_rate=1e-3, init_from="resume")
    # a longer run whose learning-rate schedule is unchanged may continue
    records = run(data_root, tmp_path, max_iters=6, lr_decay_iters=4, init_from="resume")
    assert max(r["step"] for r in records if "train_loss" in r) == 6
