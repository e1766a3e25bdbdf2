"""Token loading for training (token_data.py): windows over shards, checks, and a parquet corpus end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import token_data
from conftest import load_prepare_module, read_metrics, run_train_cli, tiny_args, val_ppls
from settings import UserError
from token_data import TokenSplit


def make_split(lengths: list[int]) -> TokenSplit:
    """A split whose token at concatenated position p has the value p, so positions can be read back."""
    arrays, start = [], 0
    for length in lengths:
        arrays.append(np.arange(start, start + length, dtype=np.int64))
        start += length
    return TokenSplit("train", [f"train_{i:03d}.bin" for i in range(len(lengths))], arrays)


def file_of(split: TokenSplit, position: int) -> int:
    return int(np.searchsorted(split.starts, position, side="right") - 1)


def test_single_file_sampling_matches_old_draw() -> None:
    split = make_split([10_000])
    for step in (0, 1, 7, 500):
        # the draw of a single train.bin, so runs prepared as one file keep their batches
        expected = np.random.default_rng([3, step]).integers(0, 10_000 - 32, size=16)
        np.testing.assert_array_equal(split.sample_windows(3, step, 16, 32), expected)


def test_single_file_eval_windows_match() -> None:
    split = make_split([1000])
    # consecutive windows of 64 inputs from the start: 300 tokens give 4, all 999 usable tokens give 15
    np.testing.assert_array_equal(split.eval_windows(300, 64), 64 * np.arange(4))
    np.testing.assert_array_equal(split.eval_windows(0, 64), 64 * np.arange(15))


def test_sampled_windows_stay_in_one_shard() -> None:
    lengths = [50, 33, 7, 120, 33]
    block_size = 32
    split = make_split(lengths)
    positions = split.sample_windows(seed=1, step=0, n_windows=20_000, block_size=block_size)
    windows = split.gather(positions, block_size)

    for position, window in zip(positions.tolist(), windows):
        first = file_of(split, position)
        last = file_of(split, position + block_size)
        assert first == last, (position, first, last)
        np.testing.assert_array_equal(window, np.arange(position, position + block_size + 1))

    # Every valid start of every file is drawn, and nothing else: file i has lengths[i] - block_size starts.
    expected = {
        int(start) + offset
        for start, length in zip(split.starts, lengths)
        for offset in range(max(length - block_size, 0))
    }
    assert set(positions.tolist()) == expected


def test_sampling_is_pure_function_of_seed_and_step() -> None:
    split = make_split([50, 80, 200])
    a = split.sample_windows(seed=5, step=11, n_windows=64, block_size=16)
    b = make_split([50, 80, 200]).sample_windows(seed=5, step=11, n_windows=64, block_size=16)
    c = split.sample_windows(seed=5, step=12, n_windows=64, block_size=16)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_eval_windows_across_shards() -> None:
    split = make_split([100, 70, 20, 65])
    # Per file, (length - 1) // 32 windows laid end to end from the file's first token.
    np.testing.assert_array_equal(split.eval_windows(0, 32), [0, 32, 64, 100, 132, 190, 222])
    np.testing.assert_array_equal(split.eval_windows(160, 32), [0, 32, 64, 100, 132])
    for position in split.eval_windows(0, 32).tolist():
        assert file_of(split, position) == file_of(split, position + 32)


def test_gather_rejects_window_across_shards() -> None:
    split = make_split([40, 40])
    with pytest.raises(ValueError, match="crosses the end of a train file"):
        split.gather(np.array([20]), 32)


# ---------------------------------------------------------------------------
# open_split checks against meta.json


def write_shards(folder: Path, lengths: list[int], vocab_size: int = 100) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, length in enumerate(lengths):
        tokens = (np.arange(length) % vocab_size).astype("<u2")
        tokens.tofile(folder / f"train_{i:03d}.bin")
        entries.append({"file": f"train_{i:03d}.bin", "tokens": length, "max_token_id": int(tokens.max())})
    return {"vocab_size": vocab_size, "dtype": "uint16", "shards": {"train": entries}}


def test_open_split_reads_shards(tmp_path: Path) -> None:
    meta = write_shards(tmp_path, [40, 10, 60])
    split = token_data.open_split(str(tmp_path), meta, "train", 32, "docs")
    assert len(split) == 110
    assert split.lengths.tolist() == [40, 10, 60]


def test_open_split_uses_recorded_max_id(tmp_path: Path) -> None:
    meta = write_shards(tmp_path, [40, 60], vocab_size=100)
    meta["vocab_size"] = 30
    with pytest.raises(UserError, match="contains token id 39 .*vocab_size=30"):
        token_data.open_split(str(tmp_path), meta, "train", 32, "docs")


def test_open_split_rejects_changed_shard(tmp_path: Path) -> None:
    meta = write_shards(tmp_path, [40, 60])
    np.arange(50, dtype="<u2").tofile(tmp_path / "train_001.bin")
    with pytest.raises(UserError, match="contains 50 tokens, but meta.json lists 60"):
        token_data.open_split(str(tmp_path), meta, "train", 32, "docs")


def test_open_split_needs_one_window(tmp_path: Path) -> None:
    meta = write_shards(tmp_path, [20, 30])
    with pytest.raises(UserError, match="no train file .* block_size \\+ 1 = 33 tokens.*--shard_tokens"):
        token_data.open_split(str(tmp_path), meta, "train", 32, "docs")


def test_open_split_rejects_path_in_index(tmp_path: Path) -> None:
    meta = write_shards(tmp_path, [40])
    meta["shards"]["train"][0]["file"] = "../train_000.bin"
    with pytest.raises(UserError, match="invalid train entry"):
        token_data.open_split(str(tmp_path), meta, "train", 32, "docs")


# ---------------------------------------------------------------------------
# end to end


def test_parquet_corpus_prepares_and_trains(tmp_path: Path) -> None:
    texts = [f"Story {i}. " + " ".join(f"The cat number {j} sat on mat {i % 7}." for j in range(i % 11 + 1)) for i in range(300)]
    corpus = tmp_path / "stories.parquet"
    pq.write_table(pa.table({"text": texts}), corpus, row_group_size=50)
    data_root = tmp_path / "data"
    meta = load_prepare_module().main([
        "stories", f"--input={corpus}", f"--out_dir={data_root / 'stories'}", "--shard_tokens=2000",
        "--val_every=5", "--num_proc=1",
    ])
    assert len(meta["shards"]["train"]) > 2
    assert len(meta["shards"]["val"]) > 1
    assert json.loads((data_root / "stories" / "meta.json").read_text()) == meta

    out_dir = tmp_path / "run"
    result = run_train_cli(tiny_args(
        data_root, out_dir, dataset="stories", max_iters=6, eval_steps=[6], eval_tokens=2048, log_interval=2,
    ))
    assert result.returncode == 0, result.stderr
    records = read_metrics(out_dir)
    ppl = val_ppls(records)
    assert sorted(ppl) == [6]
    assert np.isfinite(ppl[6])
    assert (out_dir / "ckpt_000006.pt").exists()
    assert "64 validation windows of 32" in result.stdout
