"""User mistakes: exit code 2, one `error:` line on stderr, and the user's files left as they were."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from checkpoint import FORMAT
from conftest import PYTHON, REPO, subprocess_env, tiny_args


def snapshot(*folders: Path) -> dict[str, bytes]:
    files = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                files[str(path)] = path.read_bytes()
    return files


def expect_error(capsys, argv: list[str], *fragments: str) -> str:
    with pytest.raises(SystemExit) as info:
        train.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith("error: ")
    assert "Traceback" not in line
    for fragment in fragments:
        assert fragment in line, line
    return line


@pytest.fixture
def data_copy(data_root, tmp_path) -> Path:
    """A private copy of the prepared data that a test may damage."""
    root = tmp_path / "data"
    shutil.copytree(data_root / "chars", root / "chars")
    return root


@pytest.fixture(scope="module")
def finished_run(data_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    train.train(train.parse_args(tiny_args(data_root, out, max_iters=4, eval_steps=[4])))
    return out


@pytest.mark.parametrize("overrides, fragments", [
    (["--lerning_rate=1e-3"], ["unknown setting 'lerning_rate'", "did you mean 'learning_rate'"]),
    (["--n_layer=two"], ["'n_layer'", "cannot parse 'two'"]),
    (["--n_layer=2.5"], ["'n_layer' expects int", "2.5"]),
    (["config/missing.py"], ["config file 'config/missing.py' not found"]),
    (["--mlp=relu"], ["mlp='relu'", "gelu, swiglu, geglu, dynactglu"]),
    (["--n_embd=30", "--n_head=4"], ["n_embd=30 is not divisible by n_head=4"]),
    (["--max_iters=10", "--eval_steps=[5, 20]"], ["eval_steps [20]", "max_iters=10"]),
    (["--batch_size=0"], ["batch_size=0 must be positive"]),
    (["--block_size=-8"], ["block_size=-8 must be positive"]),
    (["--learning_rate=0.0"], ["learning_rate=0.0 must be positive"]),
])
def test_config_mistakes(capsys, data_root, tmp_path, overrides, fragments):
    expect_error(capsys, tiny_args(data_root, tmp_path / "out") + overrides, *fragments)
    assert not (tmp_path / "out").exists()


def test_missing_data_folder(capsys, tmp_path):
    expect_error(capsys, tiny_args(tmp_path, tmp_path / "out", dataset="tinystories"),
                 "not found", "python data/prepare.py tinystories")


@pytest.mark.parametrize("damage, fragments", [
    ("short_train", ["contains 10 tokens, fewer than block_size + 1 = 33"]),
    ("short_val", ["val.bin", "fewer than block_size + 1"]),
    ("odd_bytes", ["not a whole number of uint16 tokens"]),
    ("no_meta", ["meta.json' not found", "python data/prepare.py chars"]),
    ("bad_json", ["meta.json' is not valid JSON"]),
    ("small_vocab", ["contains token id", "vocab_size=10"]),
    ("tokenizer_mismatch", ["gives vocab_size=65 but its tokenizer has 64"]),
])
def test_data_mistakes(capsys, data_copy, tmp_path, damage, fragments):
    folder = data_copy / "chars"
    meta = json.loads((folder / "meta.json").read_text())
    if damage == "short_train":
        np.arange(10, dtype=np.uint16).tofile(folder / "train.bin")
    elif damage == "short_val":
        np.arange(5, dtype=np.uint16).tofile(folder / "val.bin")
    elif damage == "odd_bytes":
        with open(folder / "train.bin", "ab") as f:
            f.write(b"\x00")
    elif damage == "no_meta":
        (folder / "meta.json").unlink()
    elif damage == "bad_json":
        (folder / "meta.json").write_text("{not json")
    elif damage == "small_vocab":
        meta["vocab_size"] = 10
        meta["tokenizer"]["vocab_size"] = 10
        (folder / "meta.json").write_text(json.dumps(meta))
    elif damage == "tokenizer_mismatch":
        meta["tokenizer"]["vocab_size"] = 64
        (folder / "meta.json").write_text(json.dumps(meta))
    before = snapshot(data_copy)
    expect_error(capsys, tiny_args(data_copy, tmp_path / "out"), *fragments)
    assert snapshot(data_copy) == before
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_resume_without_checkpoint(capsys, data_root, tmp_path):
    expect_error(capsys, tiny_args(data_root, tmp_path, init_from="resume"), "ckpt.pt' not found")


@pytest.mark.parametrize("kind, fragment", [
    ("truncated", "unreadable or truncated"),
    ("foreign", "not written by this repo"),
    ("pickled", "contains objects other than tensors"),
])
def test_bad_checkpoint_on_resume(capsys, data_root, finished_run, tmp_path, kind, fragment):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    if kind == "truncated":
        data = (run / "ckpt.pt").read_bytes()
        (run / "ckpt.pt").write_bytes(data[: len(data) // 3])
    elif kind == "foreign":
        torch.save({"model": {}}, run / "ckpt.pt")
    else:
        torch.save({"format": FORMAT, "payload": Path("x")}, run / "ckpt.pt")
    before = snapshot(run)
    expect_error(capsys, tiny_args(data_root, run, max_iters=8, init_from="resume"), fragment)
    assert snapshot(run) == before


def test_resume_with_other_model_settings(capsys, data_root, finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = snapshot(run)
    expect_error(capsys, tiny_args(data_root, run, max_iters=8, init_from="resume", n_layer=3, mlp="swiglu"),
                 "mlp: checkpoint 'dynactglu' vs now 'swiglu'", "n_layer: checkpoint 2 vs now 3")
    assert snapshot(run) == before


def test_resume_with_other_vocabulary(capsys, data_root, finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    other = tmp_path / "data" / "chars"
    shutil.copytree(data_root / "chars", other)
    meta = json.loads((other / "meta.json").read_text())
    meta["vocab_size"] = meta["tokenizer"]["vocab_size"] = 70
    (other / "meta.json").write_text(json.dumps(meta))
    expect_error(capsys, tiny_args(tmp_path / "data", run, max_iters=8, init_from="resume"),
                 "vocab_size: checkpoint 65 vs now 70")


def test_new_run_into_existing_out_dir(capsys, data_root, finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = snapshot(run)
    expect_error(capsys, tiny_args(data_root, run, seed=9), "already holds a run", "--overwrite=True")
    assert snapshot(run) == before


def test_out_dir_that_is_a_file(capsys, data_root, tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    expect_error(capsys, tiny_args(data_root, target), "cannot create out_dir")
    assert target.read_text() == "not a folder"


def test_disk_full_detected_before_training(capsys, data_root, tmp_path, monkeypatch):
    monkeypatch.setattr(train.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    expect_error(capsys, tiny_args(data_root, tmp_path), "MiB free", "two checkpoints need")
    assert not (tmp_path / "metrics.jsonl").exists()


def test_cuda_device_without_cuda(capsys, data_root, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    expect_error(capsys, tiny_args(data_root, tmp_path, device="cuda"), "CUDA is not available", "--device=cpu")


@pytest.mark.parametrize("script, args, fragment", [
    ("train.py", ["--nope=1"], "unknown setting 'nope'"),
    ("sample.py", ["--out_dir=/nonexistent/run"], "not found"),
    ("sample.py", ["--out_dir=x", "--num_samples=two"], "invalid int value"),
    ("data/prepare.py", ["shakespeare_char", "--tokenizer=bpe"], "invalid choice"),
    ("data/prepare.py", ["mine", "--input=/nonexistent/corpus.txt"], "input file not found"),
    ("compare.py", ["report", "/nonexistent/runs"], "not found"),
])
def test_cli_prints_one_line(script, args, fragment):
    result = subprocess.run([PYTHON, str(REPO / script), *args], capture_output=True, text=True,
                            env=subprocess_env(), cwd=REPO, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]


def test_debug_variable_shows_traceback(data_root, tmp_path):
    env = subprocess_env() | {"DYNACT_DEBUG": "1"}
    result = subprocess.run([PYTHON, str(REPO / "train.py"), "--nope=1"], capture_output=True, text=True, env=env, cwd=REPO,
                            timeout=120)
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "UserError" in result.stderr
