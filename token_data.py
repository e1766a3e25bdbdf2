"""Prepared token data for training: meta.json, token files, batch windows and validation windows.

A prepared dataset folder contains meta.json and the token files that data/prepare.py wrote. Each split
(train, val) is one or more files of raw little-endian uint16 or uint32 token ids:

- Sharded format: meta.json has a "shards" index, {"train": [{"file", "tokens", "max_token_id",
  "sha256"}, ...], "val": [...]}, and a split is the concatenation of its files in that order. A single
  train.bin is a split with one entry.
- Old format: meta.json has no "shards", and the splits are train.bin and val.bin.

Every file is memory-mapped once per process. A window of block_size + 1 tokens never spans two files:
the valid window starts of all files form one index space, file i contributing len_i - block_size
starts, so with one file the sampling is exactly `rng.integers(0, n_tokens - block_size)`. Positions
handed around (batch offsets, validation offsets) are positions in the concatenation of the files.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from settings import TrainConfig, UserError

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
SPLITS = ("train", "val")


def data_dir_for(cfg: TrainConfig) -> str:
    return os.path.join(cfg.data_root or os.path.join(REPO_ROOT, "data"), cfg.dataset)


def load_meta(data_dir: str, dataset: str) -> dict:
    if not os.path.isdir(data_dir):
        raise UserError(
            f"data folder {data_dir!r} not found; create it with `python data/prepare.py {dataset}`"
        )
    meta_path = os.path.join(data_dir, "meta.json")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{meta_path!r} not found; rerun `python data/prepare.py {dataset}`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{meta_path!r} is not valid JSON ({e}); rerun `python data/prepare.py {dataset}`") from None
    for key in ("vocab_size", "dtype", "tokenizer"):
        if key not in meta:
            raise UserError(f"{meta_path!r} has no '{key}'; rerun `python data/prepare.py {dataset}`")
    if not isinstance(meta["vocab_size"], int) or meta["vocab_size"] <= 0:
        raise UserError(f"{meta_path!r} has vocab_size={meta['vocab_size']!r}; rerun `python data/prepare.py {dataset}`")
    tokenizer_vocab = meta["tokenizer"].get("vocab_size") if isinstance(meta["tokenizer"], dict) else None
    if tokenizer_vocab != meta["vocab_size"]:
        raise UserError(
            f"{meta_path!r} gives vocab_size={meta['vocab_size']} but its tokenizer has {tokenizer_vocab!r}; "
            f"rerun `python data/prepare.py {dataset}`"
        )
    if meta["dtype"] not in ("uint16", "uint32"):
        raise UserError(f"{meta_path!r} has dtype {meta['dtype']!r}, not uint16 or uint32; rerun `python data/prepare.py {dataset}`")
    return meta


def open_tokens(path: str, dtype: str, min_tokens: int, dataset: str) -> np.memmap:
    """Memory-map a token file once; it must contain at least min_tokens tokens."""
    if not os.path.isfile(path):
        raise UserError(f"{path!r} not found; rerun `python data/prepare.py {dataset}`")
    itemsize = np.dtype(dtype).itemsize
    size = os.path.getsize(path)
    if size % itemsize != 0:
        raise UserError(
            f"{path!r} has {size} bytes, not a whole number of {dtype} tokens; rerun `python data/prepare.py {dataset}`"
        )
    if size // itemsize < min_tokens:
        raise UserError(
            f"{path!r} contains {size // itemsize} tokens, fewer than block_size + 1 = {min_tokens}; "
            "lower block_size or use a larger corpus"
        )
    return np.memmap(path, dtype=dtype, mode="r")


def check_token_ids(tokens: np.ndarray, vocab_size: int, path: str, dataset: str, chunk: int = 1 << 24) -> None:
    """Raise UserError if any token id is at or above vocab_size, scanning in chunks of a memory map."""
    for start in range(0, len(tokens), chunk):
        top = int(tokens[start : start + chunk].max())
        if top >= vocab_size:
            raise UserError(
                f"{path!r} contains token id {top}, but meta.json gives vocab_size={vocab_size}; "
                f"rerun `python data/prepare.py {dataset}`"
            )


def windows_to_tensors(
    tokens: TokenSplit, offsets: np.ndarray, block_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather the windows of block_size + 1 tokens at offsets into inputs x and next-token targets y."""
    windows = tokens.gather(offsets, block_size)
    chunk = torch.from_numpy(windows.astype(np.int64))
    if device.type == "cuda":
        chunk = chunk.pin_memory().to(device, non_blocking=True)
    else:
        chunk = chunk.to(device)
    return chunk[:, :-1], chunk[:, 1:]


# -----------------------------------------------------------------------------
# sharded splits


class TokenSplit:
    """The token files of one split, memory-mapped once and addressed as one concatenated sequence."""

    def __init__(self, name: str, paths: list[str], arrays: list[np.ndarray]) -> None:
        self.name = name
        self.paths = paths
        self.arrays = arrays
        self.lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        # starts[i] is the position of file i's first token in the concatenation
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.lengths.sum())

    def window_starts(self, block_size: int) -> np.ndarray:
        """Return how many windows of block_size + 1 tokens can start in each file."""
        return np.maximum(self.lengths - block_size, 0)

    def sample_windows(self, seed: int, step: int, n_windows: int, block_size: int) -> np.ndarray:
        """Return the positions of the global batch for the update at `step`, a pure function of (seed, step).

        A window start is drawn uniformly from all valid starts of all files, so a file's share of the
        batches is proportional to its length. With one file the draw is rng.integers(0, len - block_size).
        """
        per_file = self.window_starts(block_size)
        rng = np.random.default_rng([seed, step])
        draws = rng.integers(0, int(per_file.sum()), size=n_windows)
        first_draw = np.concatenate([[0], np.cumsum(per_file)[:-1]])
        file_index = np.searchsorted(np.cumsum(per_file), draws, side="right")
        return self.starts[file_index] + (draws - first_draw[file_index])

    def eval_windows(self, eval_tokens: int, block_size: int) -> np.ndarray:
        """Return the positions of the fixed validation windows.

        Windows of block_size inputs are laid end to end from the start of each file, in file order,
        without crossing into the next file, until eval_tokens tokens are covered (all files when
        eval_tokens is 0).
        """
        limit = eval_tokens // block_size if eval_tokens else None
        positions = []
        for start, length in zip(self.starts, self.lengths):
            count = max(int(length) - 1, 0) // block_size
            if limit is not None:
                count = min(count, limit - len(positions))
            positions.extend(int(start) + block_size * np.arange(count))
            if limit is not None and len(positions) >= limit:
                break
        return np.array(positions, dtype=np.int64)

    def gather(self, positions: np.ndarray, block_size: int) -> np.ndarray:
        """Return the windows of block_size + 1 tokens at `positions`, one row each."""
        file_index = np.searchsorted(self.starts, positions, side="right") - 1
        local = positions - self.starts[file_index]
        if np.any(local + block_size + 1 > self.lengths[file_index]):
            raise ValueError(f"a window of {block_size + 1} tokens at positions {positions} crosses the end of a {self.name} file")
        rows = np.empty((len(positions), block_size + 1), dtype=self.arrays[0].dtype)
        span = np.arange(block_size + 1)
        for index in np.unique(file_index):
            chosen = file_index == index
            rows[chosen] = self.arrays[index][local[chosen][:, None] + span]
        return rows


def split_files(meta: dict, split: str, data_dir: str, dataset: str) -> list[dict]:
    """Return the index entries of a split's files, from meta.json's "shards" or the old train.bin/val.bin."""
    meta_path = os.path.join(data_dir, "meta.json")
    if "shards" not in meta:
        return [{"file": f"{split}.bin"}]
    entries = meta["shards"].get(split) if isinstance(meta["shards"], dict) else None
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{meta_path!r} lists no {split} files under 'shards'; rerun `python data/prepare.py {dataset}`")
    for entry in entries:
        valid = (
            isinstance(entry, dict)
            and isinstance(entry.get("file"), str)
            and os.path.basename(entry["file"]) == entry["file"]
            and isinstance(entry.get("tokens"), int)
            and isinstance(entry.get("max_token_id"), int)
        )
        if not valid:
            raise UserError(
                f"{meta_path!r} has an invalid {split} entry {entry!r} under 'shards' (expected a file name, "
                f"tokens and max_token_id); rerun `python data/prepare.py {dataset}`"
            )
    return entries


def open_split(data_dir: str, meta: dict, split: str, block_size: int, dataset: str) -> TokenSplit:
    """Memory-map a split's token files and check them against meta.json.

    Token ids are checked against vocab_size through each file's max_token_id in meta.json. Files of
    the old format, which has no such record, are scanned.
    """
    entries = split_files(meta, split, data_dir, dataset)
    paths = [os.path.join(data_dir, entry["file"]) for entry in entries]
    # A single file must contain one window. Among several files, shorter ones just contribute no window.
    min_tokens = block_size + 1 if len(entries) == 1 else 0
    arrays = []
    for entry, path in zip(entries, paths):
        if min_tokens == 0 and os.path.isfile(path) and os.path.getsize(path) == 0:
            raise UserError(f"{path!r} is empty; rerun `python data/prepare.py {dataset}`")
        tokens = open_tokens(path, meta["dtype"], min_tokens, dataset)
        if "tokens" in entry and len(tokens) != entry["tokens"]:
            raise UserError(
                f"{path!r} contains {len(tokens)} tokens, but meta.json lists {entry['tokens']}; "
                f"rerun `python data/prepare.py {dataset}`"
            )
        if "max_token_id" in entry:
            if entry["max_token_id"] >= meta["vocab_size"]:
                raise UserError(
                    f"{path!r} contains token id {entry['max_token_id']} (its max_token_id in meta.json), but "
                    f"meta.json gives vocab_size={meta['vocab_size']}; rerun `python data/prepare.py {dataset}`"
                )
        else:
            check_token_ids(tokens, meta["vocab_size"], path, dataset)
        arrays.append(tokens)

    token_split = TokenSplit(split, paths, arrays)
    if token_split.window_starts(block_size).sum() == 0:
        raise UserError(
            f"no {split} file in {data_dir!r} contains block_size + 1 = {block_size + 1} tokens; lower block_size "
            f"or rerun `python data/prepare.py {dataset}` with a larger --shard_tokens"
        )
    return token_split
