import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The corpus the tests train on; the repo bundles Tiny Shakespeare, and DYNACT_TEST_CORPUS may name another .txt.
CORPUS = Path(os.environ.get("DYNACT_TEST_CORPUS", REPO / "data" / "tinyshakespeare.txt"))


def load_prepare_module():
    spec = importlib.util.spec_from_file_location("prepare", REPO / "data" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["prepare"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A data root whose folder `chars` contains the corpus prepared at character level."""
    root = tmp_path_factory.mktemp("data")
    load_prepare_module().main(["chars", f"--input={CORPUS}", "--tokenizer=char", f"--out_dir={root / 'chars'}"])
    return root


def tiny_args(data_root: Path, out_dir: Path, **overrides) -> list[str]:
    """Command-line settings for a model small enough to train a few dozen steps in about a second."""
    settings = dict(
        data_root=str(data_root), dataset="chars", out_dir=str(out_dir), device="cpu",
        n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=8, dropout=0.0,
        max_iters=30, warmup_iters=5, learning_rate=3e-3, min_lr=3e-4, eval_tokens=1024,
        eval_steps=[], eval_interval=0, log_interval=1, peak_flops=1e12,
    )
    settings.update(overrides)
    return [f"--{k}={v!r}" if not isinstance(v, str) else f"--{k}={v}" for k, v in settings.items()]


def read_metrics(out_dir: Path) -> list[dict]:
    with open(Path(out_dir) / "metrics.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def train_losses(records: list[dict]) -> dict[int, float]:
    return {r["step"]: r["train_loss"] for r in records if "train_loss" in r}


def val_ppls(records: list[dict]) -> dict[int, float]:
    return {r["step"]: r["val_ppl"] for r in records if "val_ppl" in r}


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


PYTHON = sys.executable


def run_train_cli(args: list[str], nproc: int = 0, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run train.py in a subprocess, under torchrun with nproc processes when nproc > 0."""
    if nproc:
        launcher = [PYTHON, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    else:
        launcher = [PYTHON]
    return subprocess.run(
        launcher + [str(REPO / "train.py"), *args],
        capture_output=True, text=True, env=subprocess_env(), timeout=timeout, cwd=REPO,
    )
