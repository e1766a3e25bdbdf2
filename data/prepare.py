"""Tokenize a text corpus into train.bin, val.bin and meta.json for training.

Run from the repository root (or from any folder, with the path to this file):

    python data/prepare.py shakespeare_char                  # bundled Tiny Shakespeare, char-level
    python data/prepare.py shakespeare --tokenizer=gpt2      # the same text, GPT-2 BPE
    python data/prepare.py NAME --input=corpus.jsonl --text_field=text
    python data/prepare.py tinystories --hf=roneneldan/TinyStories

Sources: a .txt file is one text. Each row of a .jsonl or .parquet file, and
of a Hugging Face hub dataset, is one document whose text is in --text_field.

Split rule (deterministic, no shuffling):
- One text is tokenized as a whole. The first (1 - val_fraction) of its
  tokens, 90% by default, are train and the rest are val.
- Documents are joined in order, then split by token position in the
  same way. With GPT-2, each document is followed by the end-of-text token
  50256. With the char tokenizer, documents are joined with "\\n\\n" before
  the character table is built.
- A hub dataset that has a `validation` split uses that split as val, and its
  `train` split as train.

Output, in data/NAME/ next to this file unless --out_dir is given:
- train.bin, val.bin: token ids as raw little-endian uint16, or uint32 when
  the vocabulary has more than 65,536 tokens.
- meta.json: dataset, tokenizer (its describe() dict), vocab_size, dtype,
  train_tokens, val_tokens, source, source_sha256 and split (the rule above
  in one sentence).
Each file is written to a temporary file in the same folder and then renamed.
An old meta.json is deleted before the .bin files are replaced and the new one
is written last, so a meta.json always describes the .bin files next to it.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tokenizer import CharTokenizer, GPT2Tokenizer, Tokenizer, load_gpt2_encoding  # noqa: E402

if TYPE_CHECKING:
    import datasets

DATA_DIR = Path(__file__).resolve().parent
BUNDLED_TEXT = DATA_DIR / "tinyshakespeare.txt"
UTF8_BOM = b"\xef\xbb\xbf"
CHAR_DOCUMENT_SEPARATOR = "\n\n"
TEXT_SUFFIXES = (".txt",)
DOCUMENT_SUFFIXES = {".jsonl": "json", ".parquet": "parquet"}

# Characters per piece when encoding one big text with GPT-2, and pieces per
# encode_batch call (tiktoken runs up to 8 threads per call).
GPT2_CHUNK_CHARS = 1 << 20
GPT2_CHUNKS_PER_BATCH = 16
DOCUMENTS_PER_BATCH = 1024
CHAR_CHUNK_CHARS = 1 << 22


@dataclass
class Corpus:
    """Loaded input: either one `text`, or documents from a dataset column."""

    source: str
    source_sha256: str | None
    text: str | None = None
    train_docs: datasets.Dataset | None = None
    # A hub dataset's own validation split, used as val instead of a position split.
    val_docs: datasets.Dataset | None = None
    text_field: str = "text"


def fail(message: str) -> SystemExit:
    """Return a SystemExit whose one-line message Python prints to stderr, exiting with status 1."""
    one_line = " ".join(message.splitlines())
    return SystemExit(f"error: {one_line}")


def token_dtype(vocab_size: int) -> np.dtype:
    """Return little-endian uint16 if every id below `vocab_size` fits in it, else uint32."""
    if vocab_size <= 1 << 16:
        return np.dtype("<u2")
    if vocab_size <= 1 << 32:
        return np.dtype("<u4")
    raise ValueError(f"vocab_size {vocab_size} does not fit in uint32 token ids")


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def display_path(path: Path) -> str:
    """Return `path` relative to the repository root when it is inside it, else absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------
# Reading input


def check_input_file(path: Path) -> None:
    if not path.exists():
        raise fail(f"input file not found: {path}; check the --input path")
    if not path.is_file():
        raise fail(f"input path is not a file: {path}; pass a .txt, .jsonl or .parquet file")
    if path.stat().st_size == 0:
        raise fail(f"input file is empty: {path}; pass a file that contains text")


def read_text_file(path: Path, encoding_errors: str) -> tuple[str, str]:
    """Read a UTF-8 text file, dropping a leading byte order mark.

    Return the text and the SHA-256 of the file's bytes.
    """
    check_input_file(path)
    data = path.read_bytes()
    bom_length = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
    try:
        text = data[bom_length:].decode("utf-8", errors=encoding_errors)
    except UnicodeDecodeError as exc:
        offset = bom_length + exc.start
        raise fail(
            f"{path} is not valid UTF-8: byte 0x{data[offset]:02x} at byte offset {offset} "
            f"({exc.reason}); convert the file to UTF-8 or pass --encoding_errors=replace"
        ) from None
    if not text:
        raise fail(f"input file contains only a byte order mark: {path}; pass a file with text")
    return text, hashlib.sha256(data).hexdigest()


def load_local_documents(
    path: Path, text_field: str, encoding_errors: str, cache_dir: str | None
) -> datasets.Dataset:
    """Load a .jsonl or .parquet file with the datasets library, one document per row."""
    import datasets

    check_input_file(path)
    builder = DOCUMENT_SUFFIXES[path.suffix.lower()]
    options: dict[str, Any] = {}
    if builder == "json" and encoding_errors != "strict":
        options["encoding_errors"] = encoding_errors
    try:
        docs = datasets.load_dataset(
            builder, data_files=str(path), split="train", cache_dir=cache_dir, **options
        )
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as exc:
        # DatasetGenerationError's own message is generic, and its cause names the bad row.
        detail = exc.__cause__ or exc
        raise fail(
            f"could not read {path} as {path.suffix.lower()[1:]} ({type(detail).__name__}: "
            f"{detail}); check that the file is valid and not truncated"
        ) from None
    return select_text_column(docs, text_field, str(path))


def load_hub_documents(
    name: str, config: str | None, text_field: str, cache_dir: str | None
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """Load a hub dataset's train split, and its validation split when it has one."""
    import datasets

    # NOTE: hub loading fails with exception classes from datasets, huggingface_hub,
    # fsspec and the HTTP client, which change between versions, so this catches
    # them all and reports the class name.
    try:
        splits = datasets.load_dataset(name, config, cache_dir=cache_dir)
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
    train = select_text_column(splits["train"], text_field, name)
    val = None
    if "validation" in splits:
        val = select_text_column(splits["validation"], text_field, f"{name} (validation)")
    return train, val


def select_text_column(docs: datasets.Dataset, text_field: str, source: str) -> datasets.Dataset:
    if text_field not in docs.column_names:
        raise fail(
            f"{source} has no column {text_field!r} (columns: {', '.join(docs.column_names)}); "
            "pass the column that holds the text with --text_field=NAME"
        )
    if len(docs) == 0:
        raise fail(f"{source} has no rows; pass a corpus with at least one document")
    return docs.select_columns([text_field])


def iter_document_batches(docs: datasets.Dataset, text_field: str) -> Iterator[list[str]]:
    """Yield the documents in order, in lists of DOCUMENTS_PER_BATCH, rejecting non-text rows."""
    row = 0
    for batch in docs.iter(batch_size=DOCUMENTS_PER_BATCH):
        texts = batch[text_field]
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise fail(
                    f"row {row + i} has no text in column {text_field!r} (found "
                    f"{type(text).__name__} {text!r:.40}); remove the row or fix its value"
                )
        row += len(texts)
        yield texts


def join_documents(docs: datasets.Dataset, text_field: str) -> str:
    batches = iter_document_batches(docs, text_field)
    return CHAR_DOCUMENT_SEPARATOR.join(itertools.chain.from_iterable(batches))


# ---------------------------------------------------------------------------
# Tokenizing


def split_at_line_ends(text: str, chunk_chars: int) -> list[str]:
    r"""Split `text` into pieces of about `chunk_chars` characters that GPT-2 encodes alone.

    Each cut is just before a line break ("\n" or "\r") that follows a
    non-whitespace character, so every piece but the last ends with the text of
    a line. GPT-2's split pattern always ends a pre-token there, the pre-token
    before the cut matches the same characters at the end of a piece, and the
    pattern has no look-behind, so the BPE tokens equal those of the whole text.
    A cut after a line break would not be safe: the pattern's `\s+(?!\S)`
    matches "\n\n" as one pre-token at the end of a piece but as "\n", "\n"
    when a letter follows.
    """
    chunks = []
    start = 0
    while len(text) - start > chunk_chars:
        cut = find_line_end(text, start + chunk_chars)
        if cut is None:
            break
        chunks.append(text[start:cut])
        start = cut
    chunks.append(text[start:])
    return chunks


def find_line_end(text: str, position: int) -> int | None:
    """Return the first index from `position` on where a line break follows non-whitespace."""
    # str.isspace() accepts every character in Unicode's White_Space set (which
    # the pattern's \s matches) and a few more, so it never allows a wrong cut.
    position = max(position, 1)
    while position < len(text):
        newline = text.find("\n", position)
        carriage_return = text.find("\r", position, newline if newline != -1 else len(text))
        line_break = carriage_return if carriage_return != -1 else newline
        if line_break == -1:
            return None
        if not text[line_break - 1].isspace():
            return line_break
        position = line_break + 1
    return None


def encode_gpt2_text(
    tokenizer: GPT2Tokenizer, text: str, chunk_chars: int = GPT2_CHUNK_CHARS
) -> np.ndarray:
    """Encode one text with GPT-2 in chunks, on several threads, equal to tokenizer.encode(text)."""
    dtype = token_dtype(tokenizer.vocab_size)
    chunks = split_at_line_ends(text, chunk_chars)
    parts = []
    with tqdm(total=len(text), unit="char", unit_scale=True, desc="encoding") as progress:
        for first in range(0, len(chunks), GPT2_CHUNKS_PER_BATCH):
            batch = chunks[first : first + GPT2_CHUNKS_PER_BATCH]
            for ids in tokenizer.encode_batch(batch):
                parts.append(np.array(ids, dtype=dtype))
            progress.update(sum(len(chunk) for chunk in batch))
    return np.concatenate(parts)


def encode_char_text(tokenizer: CharTokenizer, text: str) -> np.ndarray:
    dtype = token_dtype(tokenizer.vocab_size)
    parts = []
    with tqdm(total=len(text), unit="char", unit_scale=True, desc="encoding") as progress:
        for start in range(0, len(text), CHAR_CHUNK_CHARS):
            chunk = text[start : start + CHAR_CHUNK_CHARS]
            parts.append(np.array(tokenizer.encode(chunk), dtype=dtype))
            progress.update(len(chunk))
    return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)


def encode_gpt2_documents(
    tokenizer: GPT2Tokenizer, docs: datasets.Dataset, text_field: str, desc: str
) -> np.ndarray:
    """Encode each document followed by the end-of-text token."""
    dtype = token_dtype(tokenizer.vocab_size)
    eot = [tokenizer.eot_token]
    parts = []
    with tqdm(total=len(docs), unit="doc", unit_scale=True, desc=desc) as progress:
        for texts in iter_document_batches(docs, text_field):
            encoded = tokenizer.encode_batch(texts)
            count = sum(len(ids) + 1 for ids in encoded)
            tokens = itertools.chain.from_iterable(ids + eot for ids in encoded)
            parts.append(np.fromiter(tokens, dtype=dtype, count=count))
            progress.update(len(texts))
    return np.concatenate(parts)


def load_gpt2_tokenizer(gpt2_ranks: str | None) -> GPT2Tokenizer:
    try:
        return GPT2Tokenizer(load_gpt2_encoding(gpt2_ranks))
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        raise fail(str(exc)) from None


def split_by_position(tokens: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    n_train = int(len(tokens) * (1.0 - val_fraction))
    return tokens[:n_train], tokens[n_train:]


# ---------------------------------------------------------------------------
# Writing output


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` through a temporary file in the same folder, then rename it into place."""
    descriptor, temp_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
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


def write_outputs(out_dir: Path, train: np.ndarray, val: np.ndarray, meta: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path = out_dir / "meta.json"
    meta_path.unlink(missing_ok=True)
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")
    for name, tokens in (("train.bin", train), ("val.bin", val)):
        little_endian = tokens.astype(dtype, copy=False)
        write_atomic(out_dir / name, little_endian.tofile)
    meta_bytes = (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    write_atomic(meta_path, lambda f: f.write(meta_bytes))


# ---------------------------------------------------------------------------
# Command line


class OneLineErrorParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors exit through fail(), as one `error:` line."""

    def error(self, message: str) -> None:
        raise fail(f"{message}; run `python data/prepare.py --help` for the options")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineErrorParser(
        description="Tokenize a corpus into train.bin, val.bin and meta.json.",
        epilog="'shakespeare_char' and 'shakespeare' use the bundled data/tinyshakespeare.txt; "
        "any other NAME needs --input or --hf.",
    )
    parser.add_argument("name", help="dataset name, also the output folder name under data/")

    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", help="local corpus file: .txt (one text), .jsonl or .parquet")
    source.add_argument("--hf", help="Hugging Face hub dataset, e.g. roneneldan/TinyStories")
    parser.add_argument("--hf_config", help="configuration name of the --hf dataset")

    parser.add_argument(
        "--text_field",
        default="text",
        help="column that contains each document's text (default: text)",
    )
    parser.add_argument(
        "--tokenizer",
        choices=("char", "gpt2"),
        help="char or gpt2 (default: char for shakespeare_char, gpt2 otherwise)",
    )

    parser.add_argument("--out_dir", help="output folder (default: data/NAME next to this script)")
    parser.add_argument(
        "--gpt2_ranks",
        help="GPT-2 gpt2.tiktoken ranks file "
        "(default: $GPT2_TIKTOKEN_RANKS, else data/gpt2.tiktoken)",
    )
    parser.add_argument(
        "--val_fraction",
        type=float,
        default=0.1,
        help="fraction of tokens, taken from the end, used as val (default: 0.1)",
    )
    parser.add_argument(
        "--encoding_errors",
        choices=("strict", "replace"),
        default="strict",
        help="invalid UTF-8 in the input: strict stops with an error, replace uses U+FFFD",
    )
    parser.add_argument(
        "--cache_dir", help="cache folder for the datasets library (default: its own default)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an output folder that contains data prepared from another source or with other options",
    )
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Reject invalid option combinations, and fill in the default tokenizer."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.name):
        raise fail(
            f"invalid dataset name {args.name!r}; use letters, digits, '.', '_' and '-' "
            "starting with a letter or digit, because it becomes a folder name"
        )
    if not 0.0 < args.val_fraction < 1.0:
        raise fail(f"--val_fraction must be between 0 and 1 (exclusive), got {args.val_fraction}")

    if args.name in ("shakespeare_char", "shakespeare"):
        if args.input or args.hf:
            raise fail(
                f"{args.name!r} always uses the bundled data/tinyshakespeare.txt; "
                "choose another dataset name for --input or --hf"
            )
        if args.name == "shakespeare_char" and args.tokenizer == "gpt2":
            raise fail("'shakespeare_char' is char-level; use 'shakespeare' for GPT-2 tokens")
    elif not (args.input or args.hf):
        raise fail(
            f"dataset {args.name!r} has no source; pass --input=PATH (.txt, .jsonl or .parquet) "
            "or --hf=NAME"
        )
    if args.input:
        suffix = Path(args.input).suffix.lower()
        if suffix not in TEXT_SUFFIXES + tuple(DOCUMENT_SUFFIXES):
            raise fail(
                f"unsupported input file type {suffix or '(no suffix)'!r} for {args.input}; "
                "pass a .txt, .jsonl or .parquet file"
            )
    if args.tokenizer is None:
        args.tokenizer = "char" if args.name == "shakespeare_char" else "gpt2"


def load_corpus(args: argparse.Namespace) -> Corpus:
    if args.hf:
        train, val = load_hub_documents(args.hf, args.hf_config, args.text_field, args.cache_dir)
        return Corpus(args.hf, None, train_docs=train, val_docs=val, text_field=args.text_field)

    path = Path(args.input).expanduser() if args.input else BUNDLED_TEXT
    if path.suffix.lower() in TEXT_SUFFIXES:
        text, sha256 = read_text_file(path, args.encoding_errors)
        return Corpus(display_path(path), sha256, text=text)
    docs = load_local_documents(path, args.text_field, args.encoding_errors, args.cache_dir)
    sha256 = sha256_of_file(path)
    return Corpus(display_path(path), sha256, train_docs=docs, text_field=args.text_field)


def describe_split(corpus: Corpus, tokenizer: Tokenizer, val_fraction: float) -> str:
    """Return the one-sentence split rule stored in meta.json."""
    if corpus.text is not None:
        tokenized = "The text is tokenized as a whole,"
    elif isinstance(tokenizer, GPT2Tokenizer):
        eot = tokenizer.eot_token
        tokenized = f"Documents are tokenized in order, each followed by end-of-text token {eot},"
    else:
        tokenized = "Documents are joined in order with two newlines and tokenized,"
    if corpus.val_docs is not None:
        return (
            f"{tokenized} and train is the hub dataset's train split "
            "and val its validation split."
        )
    train_percent = f"{(1.0 - val_fraction) * 100:g}%"
    val_percent = f"{val_fraction * 100:g}%"
    return (
        f"{tokenized} then the first {train_percent} of the tokens are train "
        f"and the last {val_percent} are val."
    )


def tokenize_corpus(
    corpus: Corpus, kind: str, gpt2_ranks: str | None, val_fraction: float
) -> tuple[Tokenizer, np.ndarray, np.ndarray]:
    """Tokenize the corpus and return the tokenizer and the train and val token arrays."""
    if kind == "char":
        return tokenize_char_corpus(corpus, val_fraction)

    tokenizer = load_gpt2_tokenizer(gpt2_ranks)
    if corpus.text is not None:
        tokens = encode_gpt2_text(tokenizer, corpus.text)
    elif corpus.val_docs is None:
        tokens = encode_gpt2_documents(tokenizer, corpus.train_docs, corpus.text_field, "encoding")
    else:
        train = encode_gpt2_documents(tokenizer, corpus.train_docs, corpus.text_field, "train")
        val = encode_gpt2_documents(tokenizer, corpus.val_docs, corpus.text_field, "val")
        return tokenizer, train, val
    train, val = split_by_position(tokens, val_fraction)
    return tokenizer, train, val


def tokenize_char_corpus(
    corpus: Corpus, val_fraction: float
) -> tuple[CharTokenizer, np.ndarray, np.ndarray]:
    """Build the char table from all of the corpus's text, then tokenize it."""
    if corpus.text is not None:
        train_text = corpus.text
    else:
        train_text = join_documents(corpus.train_docs, corpus.text_field)
    val_text = None
    if corpus.val_docs is not None:
        val_text = join_documents(corpus.val_docs, corpus.text_field)

    chars = set(train_text)
    if val_text is not None:
        chars.update(val_text)
    if not chars:
        raise fail(f"{corpus.source} contains no text; pass a corpus with non-empty documents")
    tokenizer = CharTokenizer(sorted(chars))

    if val_text is not None:
        train = encode_char_text(tokenizer, train_text)
        val = encode_char_text(tokenizer, val_text)
        return tokenizer, train, val
    train, val = split_by_position(encode_char_text(tokenizer, train_text), val_fraction)
    return tokenizer, train, val


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Prepare one dataset from the command-line arguments `argv` and return its meta dict."""
    args = parse_args(argv)
    check_args(args)
    out_dir = Path(args.out_dir).expanduser() if args.out_dir else DATA_DIR / args.name

    corpus = load_corpus(args)
    tokenizer, train, val = tokenize_corpus(
        corpus, args.tokenizer, args.gpt2_ranks, args.val_fraction
    )
    if len(train) == 0 or len(val) == 0:
        raise fail(
            f"corpus too small: {len(train)} train and {len(val)} val tokens; "
            "use a bigger corpus or a different --val_fraction"
        )

    meta = {
        "dataset": args.name,
        "tokenizer": tokenizer.describe(),
        "vocab_size": tokenizer.vocab_size,
        "dtype": token_dtype(tokenizer.vocab_size).name,
        "train_tokens": int(len(train)),
        "val_tokens": int(len(val)),
        "source": corpus.source,
        "source_sha256": corpus.source_sha256,
        "split": describe_split(corpus, tokenizer, args.val_fraction),
    }
    existing = read_existing_meta(out_dir)
    if existing == meta:
        print(f"{out_dir}: already prepared from the same source with the same options; left unchanged")
        return meta
    if existing is not None and not args.overwrite:
        raise fail(
            f"{out_dir} already contains data prepared from {existing.get('source')!r} with other settings; "
            "pass --overwrite to replace it, or choose another dataset name or --out_dir"
        )
    write_outputs(out_dir, train, val, meta)
    print_summary(out_dir, meta)
    return meta


def read_existing_meta(out_dir: Path) -> dict[str, Any] | None:
    """Return the meta.json already in out_dir, {} when it is unreadable, or None when there is none."""
    path = out_dir / "meta.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}


def print_summary(out_dir: Path, meta: dict[str, Any]) -> None:
    out_dir = out_dir.resolve()
    if out_dir.is_relative_to(Path.cwd()):
        out_dir = out_dir.relative_to(Path.cwd())
    kind = meta["tokenizer"]["kind"]
    print(f"{meta['dataset']}: {kind} tokenizer, vocab_size {meta['vocab_size']}")
    print(f"  train: {meta['train_tokens']:>12,} tokens -> {out_dir / 'train.bin'}")
    print(f"  val:   {meta['val_tokens']:>12,} tokens -> {out_dir / 'val.bin'}")
    print(f"  meta:  {out_dir / 'meta.json'}")


if __name__ == "__main__":
    main()
