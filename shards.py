"""Tokenize document streams on several processes and write the tokens as resumable shards.

Used by data/prepare.py. The format it writes:

- Each split (train, val) is a sequence of token files of raw little-endian uint16 (or uint32) ids:
  `train_000.bin`, `train_001.bin`, ... with `--shard_tokens` tokens each except the last, or a single
  `train.bin` when shard_tokens is 0. Shards are cut at exactly shard_tokens tokens, so a document may
  continue in the next shard. The training loader never draws a window across two files.
- meta.json indexes the files per split, in order: {"file", "tokens", "max_token_id", "sha256"}.

Resuming: a shard is written as NAME.partial and renamed when it is complete, and then
prepare_state.json records, for each split, the complete shards and where the next shard starts (the
document that contains its first token, and how many of that document's tokens are already written).
A rerun with the same settings skips to that document, re-encodes it, drops the written part and goes
on, so its output is byte-identical to an uninterrupted run. meta.json is written last and the state
file is then deleted.

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
# Batches submitted to the pool but not yet consumed, per worker process; bounds memory use.
BATCHES_IN_FLIGHT_PER_PROCESS = 4


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
    """Appends one split's tokens to shard files and records where a rerun can continue.

    `record` is the split's entry in the state file: the complete shards, and `document` and `written`,
    the index of the last document with tokens in them (-1 for none) and how many of its tokens they hold.
    """

    def __init__(self, out_dir: Path, split: str, shard_tokens: int, record: dict[str, Any]) -> None:
        self.out_dir = out_dir
        self.split = split
        self.shard_tokens = shard_tokens
        self.single_file = shard_tokens == 0
        self.shards: list[dict[str, Any]] = list(record["shards"])
        self.document: int = record["document"]
        self.written: int = record["written"]
        self.finished: bool = record.get("finished", False)
        self.file: IO[bytes] | None = None
        self.partial_tokens = 0
        self.partial_max = -1
        self.partial_hash = hashlib.sha256()

    def record(self) -> dict[str, Any]:
        return {"shards": self.shards, "document": self.document, "written": self.written, "finished": self.finished}

    def tokens(self) -> int:
        return sum(shard["tokens"] for shard in self.shards)

    def append(self, tokens: np.ndarray, lengths: np.ndarray, documents: np.ndarray) -> bool:
        """Append the tokens of whole documents (lengths and indices given); return whether a shard completed."""
        tokens, lengths, documents, offset = self._drop_written(tokens, lengths, documents)
        ends = np.cumsum(lengths)
        completed = False
        position = 0
        while position < len(tokens):
            room = len(tokens) - position if self.single_file else self.shard_tokens - self.partial_tokens
            piece = tokens[position : position + room]
            self._write(piece)
            position += len(piece)
            if not self.single_file and self.partial_tokens == self.shard_tokens:
                # The last written token belongs to document k, which has `written` tokens in shards now.
                k = int(np.searchsorted(ends, position, side="left"))
                before = int(ends[k - 1]) if k > 0 else 0
                self.document = int(documents[k])
                self.written = position - before + (offset if k == 0 else 0)
                self._complete_shard()
                completed = True
        return completed

    def finish(self) -> None:
        """Complete the last, shorter shard (or the single file)."""
        if self.partial_tokens:
            self._complete_shard()
        self.finished = True

    def discard_partial(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def _drop_written(
        self, tokens: np.ndarray, lengths: np.ndarray, documents: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Drop what complete shards already hold, when a rerun re-encodes documents up to self.document.

        Return the remaining tokens, lengths and document indices, and how many tokens of the first
        remaining document were dropped.
        """
        if len(documents) == 0 or documents[0] > self.document:
            return tokens, lengths, documents, 0
        keep = documents >= self.document
        dropped = int(lengths[~keep].sum())
        tokens, lengths, documents = tokens[dropped:], lengths[keep], documents[keep]
        offset = 0
        if len(documents) and documents[0] == self.document:
            offset = min(self.written, int(lengths[0]))
            tokens = tokens[offset:]
            lengths = lengths.copy()
            lengths[0] -= offset
        return tokens, lengths, documents, offset

    def _write(self, piece: np.ndarray) -> None:
        if self.file is None:
            name = shard_name(self.split, len(self.shards), self.single_file)
            self.file = open(self.out_dir / (name + PARTIAL_SUFFIX), "wb")
        data = piece.tobytes()
        self.file.write(data)
        self.partial_hash.update(data)
        self.partial_tokens += len(piece)
        self.partial_max = max(self.partial_max, int(piece.max()))

    def _complete_shard(self) -> None:
        name = shard_name(self.split, len(self.shards), self.single_file)
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.file = None
        os.replace(self.out_dir / (name + PARTIAL_SUFFIX), self.out_dir / name)
        self.shards.append({
            "file": name, "tokens": self.partial_tokens, "max_token_id": self.partial_max,
            "sha256": self.partial_hash.hexdigest(),
        })
        self.partial_tokens = 0
        self.partial_max = -1
        self.partial_hash = hashlib.sha256()


def new_state(settings: dict[str, Any]) -> dict[str, Any]:
    empty = {"shards": [], "document": -1, "written": 0, "finished": False}
    return {"settings": settings, "splits": {split: dict(empty) for split in SPLITS}, "documents": {}}


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
        self.tokens = 0
        self.n_bytes = 0
        self.started = time.perf_counter()

    def update(self, documents: int, tokens: int, n_bytes: int) -> None:
        self.tokens += tokens
        self.n_bytes += n_bytes
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix(tokens=f"{self.tokens:,}", MB_per_s=f"{self.n_bytes / elapsed / 1e6:.1f}", refresh=False)
        self.bar.update(documents)

    def close(self) -> None:
        self.bar.close()


def run_streams(
    out_dir: Path, streams: list[Stream], state: dict[str, Any], shard_tokens: int, num_proc: int,
    gpt2_ranks: str | None,
) -> dict[str, SplitWriter]:
    """Tokenize the streams into shards, continuing from `state`, and return the finished writers."""
    writers = {split: SplitWriter(out_dir, split, shard_tokens, state["splits"][split]) for split in SPLITS}
    encoder = BatchEncoder(num_proc, gpt2_ranks)
    completed = False
    try:
        for stream in streams:
            if all(writers[split].finished for split in stream.splits()):
                continue
            total = run_stream(stream, writers, state, out_dir, encoder)
            for split in stream.splits():
                writers[split].finish()
                state["splits"][split] = writers[split].record()
            state["documents"].update(stream.document_counts(total))
            save_state(out_dir, state)
        completed = True
    finally:
        encoder.close(completed)
        for writer in writers.values():
            writer.discard_partial()
    return writers


def run_stream(
    stream: Stream, writers: dict[str, SplitWriter], state: dict[str, Any], out_dir: Path, encoder: BatchEncoder
) -> int:
    """Tokenize one stream from where its splits' shards end; return its number of documents."""
    start = max(0, min(writers[split].document for split in stream.splits()))
    progress = Progress(stream.label, stream.source.count(), start)
    index = start
    try:
        for texts, (tokens, lengths, n_bytes) in encoder.map(stream.source.iter_batches(start)):
            documents = np.arange(index, index + len(texts))
            index += len(texts)
            shard_done = False
            if stream.split:
                shard_done = writers[stream.split].append(tokens, lengths, documents)
            else:
                is_val = documents % stream.val_every == stream.val_every - 1
                token_is_val = np.repeat(is_val, lengths)
                shard_done |= writers["train"].append(tokens[~token_is_val], lengths[~is_val], documents[~is_val])
                shard_done |= writers["val"].append(tokens[token_is_val], lengths[is_val], documents[is_val])
            progress.update(len(texts), len(tokens), n_bytes)
            if shard_done:
                for split in stream.splits():
                    state["splits"][split] = writers[split].record()
                save_state(out_dir, state)
    finally:
        progress.close()
    return index


def write_arrays(out_dir: Path, arrays: dict[str, np.ndarray], shard_tokens: int) -> dict[str, SplitWriter]:
    """Write in-memory token arrays as shards (or single files) and return the finished writers."""
    writers = {}
    empty = {"shards": [], "document": -1, "written": 0}
    for split, tokens in arrays.items():
        writer = SplitWriter(out_dir, split, shard_tokens, dict(empty))
        try:
            # The whole array counts as one document, so shard cuts need no document bookkeeping.
            writer.append(tokens, np.array([len(tokens)]), np.array([0]))
            writer.finish()
        finally:
            writer.discard_partial()
        writers[split] = writer
    return writers
