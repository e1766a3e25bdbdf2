"""Document sources for data/prepare.py, read as streams so that no corpus has to fit in memory.

A source yields its documents' texts in a fixed order, in batches, from any document index on, so an
interrupted preparation can continue in the middle. Sources are local .jsonl files (one JSON object per
line, blank lines skipped), local .parquet files (read in record batches with pyarrow) and Hugging Face
hub datasets (read with `datasets.load_dataset(..., streaming=True)`). Several local files are read one
after the other in the order given.

Errors are raised as SystemExit with one `error:` line, like the rest of data/prepare.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

DOCUMENTS_PER_BATCH = 1024
DOCUMENT_SUFFIXES = (".jsonl", ".parquet")
# Files larger than this in total get a progress bar while they are hashed.
HASH_PROGRESS_BYTES = 1 << 28


def fail(message: str) -> SystemExit:
    """Return a SystemExit whose one-line message Python prints to stderr, exiting with status 1."""
    one_line = " ".join(message.splitlines())
    return SystemExit(f"error: {one_line}")


def sha256_of_files(paths: list[Path]) -> list[str]:
    """Return the SHA-256 of each file's bytes, with a progress bar when the files are large."""
    total = sum(path.stat().st_size for path in paths)
    digests = []
    with tqdm(total=total, unit="B", unit_scale=True, desc="hashing", disable=total < HASH_PROGRESS_BYTES) as bar:
        for path in paths:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
                    bar.update(len(block))
            digests.append(digest.hexdigest())
    return digests


def expand_inputs(inputs: list[str], option: str) -> list[Path]:
    """Return the document files named by --input or --val_input: files, or folders searched recursively.

    All files must have the same suffix, .jsonl or .parquet.
    """
    files: list[Path] = []
    for name in inputs:
        path = Path(name).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES)
            if not found:
                raise fail(f"folder {path} contains no .jsonl or .parquet files; check the {option} path")
            files.extend(found)
        elif not path.exists():
            raise fail(f"input file not found: {path}; check the {option} path")
        elif path.stat().st_size == 0:
            raise fail(f"input file is empty: {path}; pass a file that contains text")
        elif path.suffix.lower() not in DOCUMENT_SUFFIXES:
            raise fail(f"unsupported input file type {path.suffix or '(no suffix)'!r} for {path}; pass .jsonl or .parquet files")
        else:
            files.append(path)
    suffixes = sorted({p.suffix.lower() for p in files})
    if len(suffixes) > 1:
        raise fail(f"{option} mixes {' and '.join(suffixes)} files; pass files of one type")
    return files


class LocalDocuments:
    """Documents in local .jsonl or .parquet files, one per line or row, read in order."""

    def __init__(self, files: list[Path], text_field: str, encoding_errors: str) -> None:
        self.files = files
        self.text_field = text_field
        self.encoding_errors = encoding_errors
        self.kind = files[0].suffix.lower()

    def count(self) -> int | None:
        """Return the number of documents when the files' metadata records it (parquet), else None."""
        if self.kind != ".parquet":
            return None
        return sum(self._parquet_file(path).metadata.num_rows for path in self.files)

    def check(self) -> None:
        """Raise SystemExit when a file cannot be read or lacks the text column, before any work starts."""
        if self.kind == ".parquet":
            for path in self.files:
                self._text_column_index(path, self._parquet_file(path))

    def iter_batches(self, start: int) -> Iterator[list[str]]:
        """Yield lists of texts in document order, the first list starting at document index `start`."""
        if self.kind == ".parquet":
            return self._iter_parquet(start)
        return self._iter_jsonl(start)

    def _parquet_file(self, path: Path) -> Any:
        import pyarrow
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path)
        except (OSError, pyarrow.ArrowException) as exc:
            raise fail(
                f"could not read {path} as parquet ({type(exc).__name__}: {exc}); check that the file is "
                "valid and not truncated"
            ) from None

    def _text_column_index(self, path: Path, parquet: Any) -> int:
        import pyarrow as pa

        schema = parquet.schema_arrow
        if self.text_field not in schema.names:
            raise fail(
                f"{path} has no column {self.text_field!r} (columns: {', '.join(schema.names)}); "
                "pass the column that holds the text with --text_field=NAME"
            )
        column_type = schema.field(self.text_field).type
        if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
            raise fail(
                f"column {self.text_field!r} of {path} has type {column_type}, not string; "
                "pass the column that holds the text with --text_field=NAME"
            )
        return schema.get_field_index(self.text_field)

    def _iter_parquet(self, start: int) -> Iterator[list[str]]:
        skip = start
        for path in self.files:
            parquet = self._parquet_file(path)
            self._text_column_index(path, parquet)
            metadata = parquet.metadata
            if skip >= metadata.num_rows:
                skip -= metadata.num_rows
                continue
            # Whole row groups before the start are skipped through the file's metadata, unread.
            first_group = 0
            while skip >= metadata.row_group(first_group).num_rows:
                skip -= metadata.row_group(first_group).num_rows
                first_group += 1
            row = sum(metadata.row_group(g).num_rows for g in range(first_group))
            groups = list(range(first_group, metadata.num_row_groups))
            batches = parquet.iter_batches(
                batch_size=DOCUMENTS_PER_BATCH, columns=[self.text_field], row_groups=groups
            )
            for batch in batches:
                texts = batch.column(0).to_pylist()
                for i, text in enumerate(texts):
                    if text is None:
                        raise fail(
                            f"{path} row {row + i} has no text in column {self.text_field!r} (found null); "
                            "remove the row or fix its value"
                        )
                row += len(texts)
                if skip >= len(texts):
                    skip -= len(texts)
                    continue
                yield texts[skip:]
                skip = 0

    def _iter_jsonl(self, start: int) -> Iterator[list[str]]:
        index = 0
        texts: list[str] = []
        for path in self.files:
            # Lines are decoded one by one, so a decoding error names its exact line.
            with open(path, "rb") as f:
                for line_number, raw in enumerate(f, start=1):
                    try:
                        line = raw.decode("utf-8", errors=self.encoding_errors)
                    except UnicodeDecodeError as exc:
                        raise fail(
                            f"{path} line {line_number} is not valid UTF-8 (byte 0x{raw[exc.start]:02x}, "
                            f"{exc.reason}); convert the file to UTF-8 or pass --encoding_errors=replace"
                        ) from None
                    if not line.strip():
                        continue
                    if index >= start:
                        texts.append(self._jsonl_text(path, line_number, line))
                        if len(texts) == DOCUMENTS_PER_BATCH:
                            yield texts
                            texts = []
                    index += 1
        if texts:
            yield texts

    def _jsonl_text(self, path: Path, line_number: int, line: str) -> str:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise fail(
                f"{path} line {line_number} is not valid JSON ({exc.msg}); check that the file is valid "
                "and not truncated"
            ) from None
        if not isinstance(record, dict) or self.text_field not in record:
            found = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise fail(
                f"{path} line {line_number} has no column {self.text_field!r} (columns: {found}); "
                "pass the column that holds the text with --text_field=NAME"
            )
        text = record[self.text_field]
        if not isinstance(text, str):
            raise fail(
                f"{path} line {line_number} has no text in column {self.text_field!r} (found "
                f"{type(text).__name__} {text!r:.40}); remove the line or fix its value"
            )
        return text


class HubDocuments:
    """One split of a Hugging Face hub dataset, streamed without downloading it whole."""

    def __init__(self, dataset: Any, name: str, text_field: str) -> None:
        self.dataset = dataset
        self.name = name
        self.text_field = text_field

    def count(self) -> int | None:
        splits = getattr(getattr(self.dataset, "info", None), "splits", None) or {}
        split = getattr(self.dataset, "split", None)
        if split in splits and splits[split].num_examples:
            return int(splits[split].num_examples)
        return None

    def check(self) -> None:
        columns = getattr(self.dataset, "column_names", None)
        if columns and self.text_field not in columns:
            raise fail(
                f"{self.name} has no column {self.text_field!r} (columns: {', '.join(columns)}); "
                "pass the column that holds the text with --text_field=NAME"
            )

    def iter_batches(self, start: int) -> Iterator[list[str]]:
        dataset = self.dataset.skip(start) if start else self.dataset
        row = start
        for batch in dataset.iter(batch_size=DOCUMENTS_PER_BATCH):
            if self.text_field not in batch:
                raise fail(
                    f"{self.name} has no column {self.text_field!r} (columns: {', '.join(batch)}); "
                    "pass the column that holds the text with --text_field=NAME"
                )
            texts = batch[self.text_field]
            for i, text in enumerate(texts):
                if not isinstance(text, str):
                    raise fail(
                        f"{self.name} row {row + i} has no text in column {self.text_field!r} (found "
                        f"{type(text).__name__} {text!r:.40}); fix the data or choose another --text_field"
                    )
            row += len(texts)
            yield texts


def load_hub_splits(
    name: str, config: str | None, revision: str | None, text_field: str, cache_dir: str | None
) -> tuple[HubDocuments, HubDocuments | None]:
    """Open a hub dataset's train split, and its validation split when it has one, as streams."""
    import datasets

    # NOTE: hub loading fails with exception classes from datasets, huggingface_hub,
    # fsspec and the HTTP client, which change between versions, so this catches
    # them all and reports the class name.
    try:
        splits = datasets.load_dataset(name, config, revision=revision, cache_dir=cache_dir, streaming=True)
    except Exception as exc:  # noqa: BLE001
        raise fail(
            f"could not load hub dataset {name!r} ({type(exc).__name__}: {exc}); check the "
            "name and network access, or download the data and pass --input=PATH"
        ) from None
    if "train" not in splits:
        raise fail(
            f"hub dataset {name!r} has no 'train' split (splits: {', '.join(splits)}); "
            "download the split you want and pass it with --input=PATH"
        )
    train = HubDocuments(splits["train"], name, text_field)
    val = None
    if "validation" in splits:
        val = HubDocuments(splits["validation"], f"{name} (validation)", text_field)
    return train, val


def read_all_texts(source: LocalDocuments | HubDocuments) -> Iterator[str]:
    """Yield every document's text in order, for the in-memory char-level path."""
    for texts in source.iter_batches(0):
        yield from texts
