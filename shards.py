"""Tokenize document streams on several processes and write the tokens as resumable shards.

Used by data/prepare.py. The format it writes:

- Each split (train, val) is a sequence of token files of raw little-endian uint16 (or uint32) ids:
  `train_000.bin`, `train_001.bin`, ... with `--shard_tokens` tokens each except the last, or a single
  `train.bin` when shard_tokens is 0. Shards are cut at exactly shard_tokens tokens, so a document may
  continue in the next shard. The training loader never draws a window across two files.
- meta.json indexes the files per split, in order: {"file", "tokens", "max_token_id", "sha256"}.

Resuming: a shard is written as NAME.partial and renamed when it is complete. After each batch that
completed a shard, and at least once a minute, every open .partial file is flushed to disk. Then
prepare_state.json records the complete shards and the .partial file length of each split, and the
index of the next document of each document stream. A rerun with the same settings cuts the .partial
files back to the recorded lengths and reads on from that document, so its output is byte-identical
to an uninterrupted run. meta.json is written last and the state file is then deleted.

Tokenization: batches of documents are encoded in a process pool. Results are consumed in submission
order, so the output does not depend on the number of processes.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm import tqdm

from corpus import fail
from tokenizer import GPT2Tokenizer, load_gpt2_encoding

SPLITS = ("train", "val")
STATE_FILE = "prepare_state.json"
PARTIAL_SUFFIX = ".partial"
OUTPUT_PATTERN = re.compile(r"(train|val)(_\d{3,})?\.bin")
# Batches submitted to the pool but not yet consumed, per worker process, which bounds memory use.
BATCHES_IN_FLIGHT_PER_PROCESS = 4
# Maximum seconds between state saves, so a rerun repeats at most this much work when no shard completes.
SAVE_INTERVAL_S = 60.0


def shard_name(split: str, index: int, single_file: bool) -> str:
    return f"{split}.bin" if single_file else f"{split}_{index:03d}.bin"


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` through a temporary file in the same folder, then rename it into place."""
    import tempfile

    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file readable by its owner only.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_name, 0o666 & ~umask)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    encoded = (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    write_atomic(path, lambda f: f.write(encoded))


def remove_outputs(out_dir: Path) -> None:
    """Delete the files that prepare.py writes in out_dir: meta.json, the state file and token files."""
    (out_dir / "meta.json").unlink(missing_ok=True)
    (out_dir / STATE_FILE).unlink(missing_ok=True)
    for path in out_dir.iterdir():
        name = path.name.removesuffix(PARTIAL_SUFFIX)
        if path.is_file() and OUTPUT_PATTERN.fullmatch(name):
            path.unlink()


# ---------------------------------------------------------------------------
# Tokenizing in worker processes


_worker_tokenizer: GPT2Tokenizer | None = None


def init_worker(gpt2_ranks: str | None) -> None:
    global _worker_tokenizer
    _worker_tokenizer = GPT2Tokenizer(load_gpt2_encoding(gpt2_ranks))


def encode_documents(texts: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """Encode each text followed by the end-of-text token.

    Return the tokens as one uint16 array, each document's token count (end-of-text included) and the
    UTF-8 size of the texts in bytes.
    """
    tokenizer = _worker_tokenizer
    encoded = [tokenizer.encode(text) for text in texts]
    lengths = np.array([len(ids) + 1 for ids in encoded], dtype=np.int64)
    tokens = np.empty(int(lengths.sum()), dtype="<u2")
    position = 0
    for ids in encoded:
        tokens[position : position + len(ids)] = ids
        position += len(ids)
        tokens[position] = tokenizer.eot_token
        position += 1
    n_bytes = sum(len(text.encode("utf-8")) for text in texts)
    return tokens, lengths, n_bytes


class BatchEncoder:
    """Encodes batches of documents in order, in a pool of num_proc processes or in this one."""

    def __init__(self, num_proc: int, gpt2_ranks: str | None) -> None:
        self.num_proc = num_proc
        self.pool = None
        if num_proc > 1:
            # spawn starts clean processes on every platform; forking a process that already runs a hub
            # client's threads can deadlock.
            context = multiprocessing.get_context("spawn")
            self.pool = context.Pool(num_proc, initializer=init_worker, initargs=(gpt2_ranks,))
        else:
            init_worker(gpt2_ranks)

    def map(self, batches: Iterator[list[str]]) -> Iterator[tuple[list[str], tuple[np.ndarray, np.ndarray, int]]]:
        """Yield (texts, encode_documents(texts)) for each batch, in input order."""
        if self.pool is None:
            for texts in batches:
                yield texts, encode_documents(texts)
            return
        # Pool.imap would read the whole input ahead, so a bounded queue of pending results is used.
        pending: deque = deque()
        limit = self.num_proc * BATCHES_IN_FLIGHT_PER_PROCESS
        for texts in batches:
            pending.append((texts, self.pool.apply_async(encode_documents, (texts,))))
            if len(pending) >= limit:
                done_texts, result = pending.popleft()
                yield done_texts, result.get()
        while pending:
            done_texts, result = pending.popleft()
            yield done_texts, result.get()

    def close(self, completed: bool) -> None:
        if self.pool is None:
            return
        if completed:
            self.pool.close()
        else:
            self.pool.terminate()
        self.pool.join()


# ---------------------------------------------------------------------------
# Writing shards


class SplitWriter:
    """Appends one split's tokens to shard files and reports what is safely on disk.

    `record` is the split's entry in the state file: the complete shards, the number of tokens of the
    next shard already in its .partial file, and whether the split is finished.
    """

    def __init__(self, out_dir: Path, split: str, shard_tokens: int, dtype: np.dtype, record: dict[str, Any]) -> None:
        self.out_dir = out_dir
        self.split = split
        self.shard_tokens = shard_tokens
        self.single_file = shard_tokens == 0
        self.dtype = np.dtype(dtype)
        self.shards: list[dict[str, Any]] = list(record["shards"])
        self.finished: bool = record["finished"]
        self.file: IO[bytes] | None = None
        self.partial_tokens = 0
        self.partial_max = -1
        self.partial_hash = hashlib.sha256()
        if record["partial_tokens"]:
            self._reopen_partial(record["partial_tokens"])

    def partial_path(self) -> Path:
        return self.out_dir / (shard_name(self.split, len(self.shards), self.single_file) + PARTIAL_SUFFIX)

    def record(self) -> dict[str, Any]:
        """Flush the open shard to disk and return the split's entry for the state file."""
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())
        return {"shards": self.shards, "partial_tokens": self.partial_tokens, "finished": self.finished}

    def tokens(self) -> int:
        return sum(shard["tokens"] for shard in self.shards)

    def append(self, tokens: np.ndarray) -> bool:
        """Append tokens, cutting a shard at every shard_tokens tokens; return whether a shard completed."""
        completed = False
        position = 0
        while position < len(tokens):
            room = len(tokens) - position if self.single_file else self.shard_tokens - self.partial_tokens
            piece = tokens[position : position + room]
            self._write(piece)
            position += len(piece)
            if not self.single_file and self.partial_tokens == self.shard_tokens:
                self._complete_shard()
                completed = True
        return completed

    def finish(self) -> None:
        """Complete the last, shorter shard (or the single file)."""
        if self.partial_tokens:
            self._complete_shard()
        self.finished = True

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def _reopen_partial(self, tokens: int) -> None:
        """Reopen the shard in progress at its recorded length, dropping tokens written after the record."""
        path = self.partial_path()
        complete_name = path.with_name(path.name.removesuffix(PARTIAL_SUFFIX))
        if not path.exists() and complete_name.exists():
            # The shard was completed and renamed, but the state file was not updated before the interruption.
            os.replace(complete_name, path)
        size = tokens * self.dtype.itemsize
        if not path.is_file() or path.stat().st_size < size:
            raise fail(
                f"{path} is missing or shorter than the {size} bytes that {STATE_FILE} records; "
                "pass --overwrite to prepare the dataset from the start"
            )
        self.file = open(path, "r+b")
        self.file.truncate(size)
        for start in range(0, tokens, 1 << 22):
            data = self.file.read(min(1 << 22, tokens - start) * self.dtype.itemsize)
            self.partial_hash.update(data)
            self.partial_max = max(self.partial_max, int(np.frombuffer(data, dtype=self.dtype).max()))
        self.partial_tokens = tokens
        self.file.seek(size)

    def _write(self, piece: np.ndarray) -> None:
        if self.file is None:
            self.file = open(self.partial_path(), "wb")
        data = piece.astype(self.dtype, copy=False).tobytes()
        self.file.write(data)
        self.partial_hash.update(data)
        self.partial_tokens += len(piece)
        self.partial_max = max(self.partial_max, int(piece.max()))

    def _complete_shard(self) -> None:
        path = self.partial_path()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.file = None
        name = path.name.removesuffix(PARTIAL_SUFFIX)
        os.replace(path, self.out_dir / name)
        self.shards.append({
            "file": name, "tokens": self.partial_tokens, "max_token_id": self.partial_max,
            "sha256": self.partial_hash.hexdigest(),
        })
        self.partial_tokens = 0
        self.partial_max = -1
        self.partial_hash = hashlib.sha256()


def new_state(settings: dict[str, Any]) -> dict[str, Any]:
    """Return the state of a preparation that has not started: no shards, and no documents read."""
    empty = {"shards": [], "partial_tokens": 0, "finished": False}
    return {"settings": settings, "splits": {split: dict(empty) for split in SPLITS}, "next_document": {}, "documents": {}}


def save_state(out_dir: Path, state: dict[str, Any]) -> None:
    """Record progress after a shard is complete; an interruption after this call loses no shard."""
    write_json_atomic(out_dir / STATE_FILE, state)


def read_json(path: Path) -> dict[str, Any] | None:
    """Return a JSON file's object, {} when it is unreadable, or None when it does not exist."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def check_recorded_shards(out_dir: Path, state: dict[str, Any], dtype: np.dtype) -> None:
    """Raise SystemExit when a shard that the state file records is missing or has another size."""
    for split, record in state["splits"].items():
        for shard in record["shards"]:
            path = out_dir / shard["file"]
            expected = shard["tokens"] * dtype.itemsize
            if not path.is_file() or path.stat().st_size != expected:
                raise fail(
                    f"{path} is missing or not {expected} bytes as {STATE_FILE} records; pass --overwrite "
                    "to prepare the dataset from the start"
                )


# ---------------------------------------------------------------------------
# Running a preparation


@dataclass
class Stream:
    """A document source and the split each of its documents goes to.

    With `split`, every document goes to that split. Otherwise document i goes to val when
    i % val_every == val_every - 1 and to train else.
    """

    source: Any  # corpus.LocalDocuments or corpus.HubDocuments
    label: str
    split: str | None = None
    val_every: int = 0

    def splits(self) -> tuple[str, ...]:
        return (self.split,) if self.split else SPLITS

    def document_counts(self, total: int) -> dict[str, int]:
        if self.split:
            return {self.split: total}
        val = total // self.val_every
        return {"train": total - val, "val": val}


class Progress:
    """A tqdm bar over documents that also shows tokens written and the text read in MB/s."""

    def __init__(self, label: str, total: int | None, initial: int) -> None:
        self.bar = tqdm(total=total, initial=initial, unit="doc", unit_scale=True, desc=label, smoothing=0.1)
        self.label = label
        self.tokens = 0
        self.n_bytes = 0
        self.started = time.perf_counter()

    def update(self, documents: int, tokens: int, n_bytes: int) -> None:
        self.tokens += tokens
        self.n_bytes += n_bytes
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix(tokens=f"{self.tokens:,}", MB_per_s=f"{self.n_bytes / elapsed / 1e6:.1f}", refresh=False)
        self.bar.update(documents)

    def close(self, completed: bool) -> None:
        """Close the bar and, when the stream completed, print its text size, token count and throughput."""
        self.bar.close()
        if not completed:
            return
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        print(
            f"{self.label}: {self.n_bytes / 1e6:,.1f} MB of text, {self.tokens:,} tokens in {elapsed:.1f} s "
            f"({self.n_bytes / elapsed / 1e6:.1f} MB/s)"
        )


def run_streams(
    out_dir: Path, streams: list[Stream], state: dict[str, Any], shard_tokens: int, dtype: np.dtype,
    num_proc: int, gpt2_ranks: str | None,
) -> dict[str, SplitWriter]:
    """Tokenize the streams into shards, continuing from `state`, and return the finished writers."""
    writers = {split: SplitWriter(out_dir, split, shard_tokens, dtype, state["splits"][split]) for split in SPLITS}
    in_use = {writer.partial_path() for writer in writers.values() if writer.file is not None}
    for path in out_dir.glob(f"*{PARTIAL_SUFFIX}"):
        if path not in in_use:
            path.unlink()
    encoder = BatchEncoder(num_proc, gpt2_ranks)
    completed = False
    try:
        for stream in streams:
            if all(writers[split].finished for split in stream.splits()):
                continue
            total = run_stream(stream, writers, state, out_dir, encoder)
            for split in stream.splits():
                writers[split].finish()
            record_progress(state, writers, stream, total)
            state["documents"].update(stream.document_counts(total))
            save_state(out_dir, state)
        completed = True
    finally:
        encoder.close(completed)
        for writer in writers.values():
            writer.close()
    return writers


def record_progress(state: dict[str, Any], writers: dict[str, SplitWriter], stream: Stream, next_document: int) -> None:
    """Put the writers' durable progress and the stream's next document into `state`."""
    for split in stream.splits():
        state["splits"][split] = writers[split].record()
    state["next_document"][stream.label] = next_document


def run_stream(
    stream: Stream, writers: dict[str, SplitWriter], state: dict[str, Any], out_dir: Path, encoder: BatchEncoder
) -> int:
    """Tokenize one stream from the document the state records; return the stream's number of documents.

    The state is saved after each batch that completed a shard, and at least every SAVE_INTERVAL_S seconds.
    """
    start = state["next_document"].get(stream.label, 0)
    progress = Progress(stream.label, stream.source.count(), start)
    index = start
    last_save = time.monotonic()
    completed = False
    try:
        for texts, (tokens, lengths, n_bytes) in encoder.map(stream.source.iter_batches(start)):
            documents = np.arange(index, index + len(texts))
            index += len(texts)
            if stream.split:
                shard_done = writers[stream.split].append(tokens)
            else:
                is_val = documents % stream.val_every == stream.val_every - 1
                token_is_val = np.repeat(is_val, lengths)
                train_done = writers["train"].append(tokens[~token_is_val])
                val_done = writers["val"].append(tokens[token_is_val])
                shard_done = train_done or val_done
            progress.update(len(texts), len(tokens), n_bytes)
            if shard_done or time.monotonic() - last_save > SAVE_INTERVAL_S:
                record_progress(state, writers, stream, index)
                save_state(out_dir, state)
                last_save = time.monotonic()
        completed = True
    finally:
        progress.close(completed)
    return index


def write_arrays(out_dir: Path, arrays: dict[str, np.ndarray], shard_tokens: int) -> dict[str, SplitWriter]:
    """Write in-memory token arrays as shards (or single files) and return the finished writers."""
    writers = {}
    for split, tokens in arrays.items():
        record = {"shards": [], "partial_tokens": 0, "finished": False}
        writer = SplitWriter(out_dir, split, shard_tokens, tokens.dtype, record)
        try:
            writer.append(tokens)
            writer.finish()
        finally:
            writer.close()
        writers[split] = writer
    return writers
