import subprocess

import pytest
import torch

import sample
import train
from checkpoint import load_checkpoint, save_checkpoint
from conftest import PYTHON, REPO, subprocess_env, tiny_args
from settings import UserError, parse_args


@pytest.fixture(scope="module")
def run_dir(data_root, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("sample_run")
    train.train(parse_args(tiny_args(data_root, out_dir, max_iters=10, eval_steps=[5, 10])))
    return out_dir


def test_samples_continue_the_prompt(run_dir, capsys):
    texts = sample.sample([f"--out_dir={run_dir}", "--start=ROMEO:", "--num_samples=2", "--max_new_tokens=20", "--device=cpu"])
    assert len(texts) == 2
    for text in texts:
        assert text.startswith("ROMEO:")
        assert len(text) == len("ROMEO:") + 20
    assert "ROMEO:" in capsys.readouterr().out


def test_fixed_step_checkpoint_and_seed(run_dir):
    args = [f"--out_dir={run_dir}", "--ckpt=ckpt_000005.pt", "--max_new_tokens=30", "--num_samples=1", "--device=cpu"]
    assert sample.sample(args + ["--seed=3"]) == sample.sample(args + ["--seed=3"])
    greedy = sample.sample(args + ["--temperature=0"])
    assert greedy == sample.sample(args + ["--temperature=0", "--seed=9"])


def test_prompt_from_file(run_dir, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("KING:\n")
    texts = sample.sample([f"--out_dir={run_dir}", f"--start=FILE:{prompt}", "--max_new_tokens=5", "--num_samples=1", "--device=cpu"])
    assert texts[0].startswith("KING:\n")


def test_empty_prompt_starts_from_newline(run_dir):
    texts = sample.sample([f"--out_dir={run_dir}", "--start=", "--max_new_tokens=5", "--num_samples=1", "--device=cpu"])
    assert texts[0].startswith("\n")
    assert len(texts[0]) == 6


def test_unknown_prompt_characters_are_listed(run_dir):
    with pytest.raises(UserError, match="'é'.*'😀'|'😀'.*'é'"):
        sample.sample([f"--out_dir={run_dir}", "--start=café 😀", "--device=cpu"])


@pytest.mark.parametrize("arg, fragment", [
    ("--start=naïve", "'ï'"),
    ("--top_p=2", "--top_p=2.0"),
])
def test_cli_error_is_one_line(run_dir, arg, fragment):
    result = subprocess.run(
        [PYTHON, str(REPO / "sample.py"), f"--out_dir={run_dir}", arg, "--device=cpu"],
        capture_output=True, text=True, env=subprocess_env(), timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]


@pytest.mark.parametrize("arg, match", [
    ("--max_new_tokens=0", "max_new_tokens=0 must be positive"),
    ("--temperature=-1", "temperature=-1.0 must be >= 0"),
    ("--top_k=0", "top_k=0 must be positive"),
    ("--ckpt=missing.pt", "not found"),
])
def test_invalid_options(run_dir, arg, match):
    with pytest.raises(UserError, match=match):
        sample.sample([f"--out_dir={run_dir}", arg, "--device=cpu"])


def test_cuda_device_without_cuda(run_dir):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(UserError, match="CUDA is not available here; use --device=cpu"):
        sample.sample([f"--out_dir={run_dir}", "--device=cuda"])


def test_nan_weights_are_rejected(run_dir, tmp_path):
    ckpt = load_checkpoint(str(run_dir / "ckpt.pt"))
    ckpt["model"]["wte.weight"][0, 0] = float("nan")
    save_checkpoint(ckpt, str(tmp_path / "ckpt.pt"))
    with pytest.raises(UserError, match="NaN or Inf weights"):
        sample.sample([f"--out_dir={tmp_path}", "--device=cpu"])


def test_sample_ids_stay_below_vocab(run_dir):
    model, ckpt = sample.load_model(str(run_dir / "ckpt.pt"), torch.device("cpu"))
    out = model.generate(torch.zeros(8, 1, dtype=torch.long), 50, temperature=1.5, top_k=None)
    assert int(out.max()) < ckpt["tokenizer"]["vocab_size"]


@pytest.mark.parametrize("top_p", ["0", "1.5", "-0.2", "nan"])
def test_top_p_out_of_range(run_dir, top_p):
    with pytest.raises(UserError, match=r"--top_p=.* must be in \(0, 1\]"):
        sample.sample([f"--out_dir={run_dir}", f"--top_p={top_p}", "--device=cpu"])


def test_top_p_sampling(run_dir):
    args = [f"--out_dir={run_dir}", "--start=ROMEO:", "--max_new_tokens=20", "--num_samples=2", "--device=cpu"]
    texts = sample.sample(args + ["--top_p=0.9"])
    assert all(len(text) == len("ROMEO:") + 20 for text in texts)
    # a tiny nucleus contains only the most likely id, which is greedy decoding
    assert sample.sample(args + ["--top_p=1e-9", "--top_k=1000"]) == sample.sample(args + ["--temperature=0"])
