"""Tokenize a text corpus into token files and meta.json for training.

Run from the repository root (or from any folder, with the path to this file):

    python data/prepare.py shakespeare_char                  # bundled Tiny Shakespeare, char-level
    python data/prepare.py shakespeare --tokenizer=gpt2      # the same text, GPT-2 BPE
    python data/prepare.py tinystories                       # preset: roneneldan/TinyStories, streamed
    python data/prepare.py openwebtext                       # preset: Skylion007/openwebtext
    python data/prepare.py fineweb-edu                       # preset: HuggingFaceFW/fineweb-edu, sample-10BT
    python data/prepare.py fineweb-edu --input=DOWNLOADED_PARQUET_FOLDER
    python data/prepare.py NAME --input a.jsonl b.jsonl --text_field=text

Presets (PRESETS below) name a hub dataset, its configuration, the text field, the GPT-2 tokenizer and
the split rule. With --input, a preset's text field and split rule apply to local files instead.

Sources: a .txt file is one text. Each line of a .jsonl file and each row of a .parquet file or of a
hub dataset is one document whose text is in --text_field. --input takes several files, or folders
that are searched recursively for .jsonl or .parquet files; they are read in the order given (files
of a folder sorted by path).

Two paths:
- Streamed (GPT-2 tokenizer and documents): documents are read in batches (parquet in record batches,
  jsonl line by line, hub datasets with streaming=True), encoded in --num_proc processes, each followed
  by the end-of-text token 50256, and written as shards of --shard_tokens tokens (100M by default; 0
  writes one train.bin and one val.bin). Memory use is bounded by a few batches of documents. See
  shards.py for the shard format and how an interrupted run resumes.
- In memory (one .txt text, or the char tokenizer, whose vocabulary needs the whole corpus): the
  corpus is read and tokenized as a whole and written as train.bin and val.bin (or as shards when
  --shard_tokens is given).

Split rules (deterministic, no shuffling):
- A single text: the first (1 - val_fraction) of its tokens, 90% by default, are train and the rest val.
- Char-level documents are joined with "\\n\\n" and split by position in the same way.
- Streamed documents: a hub dataset's `validation` split, or the documents of --val_input, are val.
  Otherwise document i (counting from 0) is val when i % val_every == val_every - 1 (every 10th
  document by default), which needs no knowledge of the corpus size and so works while streaming.

Output, in data/NAME/ next to this file unless --out_dir is given:
- Token files of raw little-endian uint16 ids, or uint32 when the vocabulary has more than 65,536 tokens.
- meta.json: dataset, tokenizer (its describe() dict), vocab_size, dtype, train_tokens, val_tokens,
  source, source_sha256, split (the rule above in one sentence), shards (the token files of each split
  with their token counts, maximum token id and sha256), documents (per split, for documents) and
  settings (everything that determines the output; a rerun with equal settings does nothing).
meta.json is deleted before token files are replaced and written last, so a meta.json always
describes the files next to it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import shards  # noqa: E402
from corpus import (  # noqa: E402
    HubDocuments,
    LocalDocuments,
    expand_inputs,
    fail,
    load_hub_splits,
    read_all_texts,
    sha256_of_files,
)
from shards import Stream  # noqa: E402
from tokenizer import CharTokenizer, GPT2Tokenizer, Tokenizer, load_gpt2_encoding  # noqa: E402

DATA_DIR = Path(__file__).resolve().parent
BUNDLED_TEXT = DATA_DIR / "tinyshakespeare.txt"
UTF8_BOM = b"\xef\xbb\xbf"
CHAR_DOCUMENT_SEPARATOR = "\n\n"
TEXT_SUFFIXES = (".txt",)
DOCUMENT_SUFFIXES = (".jsonl", ".parquet")
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_VAL_EVERY = 10
DEFAULT_SHARD_TOKENS = 100_000_000
EXIT_INTERRUPTED = 130

# Characters per piece when encoding one big text with GPT-2, and pieces per
# encode_batch call (tiktoken runs up to 8 threads per call).
GPT2_CHUNK_CHARS = 1 << 20
GPT2_CHUNKS_PER_BATCH = 16
CHAR_CHUNK_CHARS = 1 << 22


@dataclass(frozen=True)
class Preset:
    """A named hub corpus: its location, the field that contains the text, and the val rule."""

    hub: str
    config: str | None
    text_field: str
    # 0: the dataset's own validation split is val. N: every Nth document is val.
    val_every: int


PRESETS = {
    "tinystories": Preset("roneneldan/TinyStories", None, "text", 0),
    # NOTE: datasets 4 and later cannot run loading scripts. If the hub repository still holds only a
    # script, pass --hf_revision=refs/convert/parquet or download its parquet files and use --input.
    "openwebtext": Preset("Skylion007/openwebtext", None, "text", 2000),
    "fineweb-edu": Preset("HuggingFaceFW/fineweb-edu", "sample-10BT", "text", 1000),
}


@dataclass
class Plan:
    """The sources, split rule and output-determining settings of one preparation."""

    source: str
    source_sha256: str | None
    split: str
    settings: dict[str, Any]
    text: str | None = None
    # Document sources: train_docs feeds both splits unless val_docs is given.
    train_docs: LocalDocuments | HubDocuments | None = None
    val_docs: LocalDocuments | HubDocuments | None = None
    streams: list[Stream] = field(default_factory=list)


def token_dtype(vocab_size: int) -> np.dtype:
    """Return little-endian uint16 if every id below `vocab_size` fits in it, else uint32."""
    if vocab_size <= 1 << 16:
        return np.dtype("<u2")
    if vocab_size <= 1 << 32:
        return np.dtype("<u4")
    raise ValueError(f"vocab_size {vocab_size} does not fit in uint32 token ids")


def display_path(path: Path) -> str:
    """Return `path` relative to the repository root when it is inside it, else absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# ---------------------------------------------------------------------------
# Reading a single text


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


def load_gpt2_tokenizer(gpt2_ranks: str | None) -> GPT2Tokenizer:
    try:
        return GPT2Tokenizer(load_gpt2_encoding(gpt2_ranks))
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        raise fail(str(exc)) from None


def split_by_position(tokens: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    n_train = int(len(tokens) * (1.0 - val_fraction))
    return tokens[:n_train], tokens[n_train:]



# ---------------------------------------------------------------------------
# Command line


class OneLineErrorParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors exit through fail(), as one `error:` line."""

    argv: list[str] | None = None  # the arguments being parsed, when they are not sys.argv[1:]

    def error(self, message: str) -> None:
        argv = self.argv if self.argv is not None else sys.argv[1:]
        if message.startswith("unrecognized arguments") and any(arg.startswith("--input=") for arg in argv):
            # argparse binds only the first file to --input=FILE, so the other files are left over
            raise fail(f"{message}; pass several files without '=': --input a.jsonl b.jsonl")
        raise fail(f"{message}; run `python data/prepare.py --help` for the options")


def parse_token_count(text: str) -> int:
    """Parse a token count such as 1000000, 1_000_000, 100K, 100M or 2G (powers of 1000)."""
    match = re.fullmatch(r"\s*(\d[\d_]*)\s*([kKmMgG]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"invalid token count {text!r}; write a whole number such as 100000000 or 100M, or 0 for single files"
        )
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[match.group(2).lower()]
    return int(match.group(1).replace("_", "")) * scale


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineErrorParser(
        description="Tokenize a corpus into token files and meta.json.",
        epilog="'shakespeare_char' and 'shakespeare' use the bundled data/tinyshakespeare.txt; "
        f"the presets {', '.join(PRESETS)} stream a hub dataset; any other NAME needs --input or --hf.",
    )
    parser.add_argument("name", help="dataset name or preset, also the output folder name under data/")

    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--input", nargs="+", action="extend",
        help="local corpus: one .txt file (one text), or .jsonl / .parquet files or folders of them",
    )
    source.add_argument("--hf", help="Hugging Face hub dataset, e.g. roneneldan/TinyStories")
    parser.add_argument(
        "--val_input", nargs="+", action="extend",
        help=".jsonl / .parquet files or folders whose documents form the val split",
    )
    parser.add_argument("--hf_config", help="configuration name of the --hf dataset")
    parser.add_argument("--hf_revision", help="branch, tag or commit of the --hf dataset (default: main)")

    parser.add_argument(
        "--text_field",
        help="column that contains each document's text (default: the preset's, else text)",
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
        help="single text or char-level corpus: fraction of tokens, taken from the end, used as val "
        f"(default: {DEFAULT_VAL_FRACTION})",
    )
    parser.add_argument(
        "--val_every",
        type=int,
        help="streamed documents without a validation split: every Nth document is val "
        f"(default: the preset's, else {DEFAULT_VAL_EVERY})",
    )
    parser.add_argument(
        "--shard_tokens",
        type=parse_token_count,
        help="tokens per output file, e.g. 100M; 0 writes one train.bin and one val.bin "
        f"(default: {DEFAULT_SHARD_TOKENS // 10**6}M for streamed documents, 0 otherwise)",
    )
    parser.add_argument(
        "--num_proc",
        type=int,
        help="processes that tokenize streamed documents (default: all available cores)",
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
        help="delete the output folder's prepared data (finished, or unfinished with other settings) "
        "and prepare again",
    )
    parser.argv = argv
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Reject invalid option combinations, and fill in preset values and defaults."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.name):
        raise fail(
            f"invalid dataset name {args.name!r}; use letters, digits, '.', '_' and '-' "
            "starting with a letter or digit, because it becomes a folder name"
        )
    if args.val_fraction is not None and not 0.0 < args.val_fraction < 1.0:
        raise fail(f"--val_fraction must be between 0 and 1 (exclusive), got {args.val_fraction}")
    if args.val_every is not None and args.val_every < 2:
        raise fail(f"--val_every must be 2 or more (every Nth document is val), got {args.val_every}")
    if args.num_proc is not None and args.num_proc < 1:
        raise fail(f"--num_proc must be 1 or more, got {args.num_proc}")

    preset = PRESETS.get(args.name)
    if args.name in ("shakespeare_char", "shakespeare"):
        if args.input or args.hf or args.val_input:
            raise fail(
                f"{args.name!r} always uses the bundled data/tinyshakespeare.txt; "
                "choose another dataset name for --input or --hf"
            )
        if args.name == "shakespeare_char" and args.tokenizer == "gpt2":
            raise fail("'shakespeare_char' is char-level; use 'shakespeare' for GPT-2 tokens")
    elif preset is not None:
        if not (args.input or args.hf):
            args.hf = preset.hub
            args.hf_config = args.hf_config if args.hf_config is not None else preset.config
        if args.text_field is None:
            args.text_field = preset.text_field
        if args.val_every is None and preset.val_every and not args.val_input:
            args.val_every = preset.val_every
    elif not (args.input or args.hf):
        raise fail(
            f"dataset {args.name!r} has no source; pass --input=PATH (.txt, .jsonl or .parquet), "
            f"--hf=NAME, or use a preset: {', '.join(PRESETS)}"
        )
    if args.text_field is None:
        args.text_field = "text"
    if args.tokenizer is None:
        args.tokenizer = "char" if args.name == "shakespeare_char" else "gpt2"
    if args.num_proc is None:
        args.num_proc = available_cores()

    is_text = not args.hf and (not args.input or is_text_input(args.input))
    streamed = args.tokenizer == "gpt2" and not is_text
    if args.val_input and not args.input:
        raise fail("--val_input applies to local --input documents; pass the train documents with --input=PATH")
    if args.val_input and is_text:
        raise fail("--val_input needs documents (.jsonl or .parquet) as --input, not a single text")
    if args.val_every is not None and not streamed:
        raise fail(
            "--val_every applies to GPT-2 documents; a single text or a char-level corpus is split "
            "by position with --val_fraction"
        )
    if args.val_fraction is not None and streamed:
        raise fail("--val_fraction applies to a single text or a char-level corpus; split documents with --val_every=N")
    if args.val_fraction is None:
        args.val_fraction = DEFAULT_VAL_FRACTION
    if args.shard_tokens is None:
        args.shard_tokens = DEFAULT_SHARD_TOKENS if streamed else 0
    args.streamed = streamed


def is_text_input(inputs: list[str]) -> bool:
    """Return whether --input names one .txt file; reject .txt files mixed with others."""
    texts = [name for name in inputs if Path(name).suffix.lower() in TEXT_SUFFIXES]
    if not texts:
        return False
    if len(inputs) > 1:
        raise fail(f"--input takes one .txt file (one text), got {len(inputs)} inputs; join the texts or use .jsonl")
    return True


# ---------------------------------------------------------------------------
# Planning: sources, split rule and settings


def plan_preparation(args: argparse.Namespace) -> Plan:
    """Open the sources (reading nothing large yet) and describe the split and settings."""
    settings: dict[str, Any] = {
        "dataset": args.name, "tokenizer": args.tokenizer, "shard_tokens": args.shard_tokens,
        "encoding_errors": args.encoding_errors,
    }
    if args.hf:
        train, val = load_hub_splits(args.hf, args.hf_config, args.hf_revision, args.text_field, args.cache_dir)
        if val is not None and args.val_every is not None and args.name not in PRESETS:
            raise fail(f"hub dataset {args.hf!r} has a validation split, so --val_every does not apply; drop it")
        if val is not None and args.val_every is None:
            args.val_every = 0
        settings.update(hf_config=args.hf_config, hf_revision=args.hf_revision, text_field=args.text_field)
        plan = Plan(args.hf, None, "", settings, train_docs=train, val_docs=val if not args.val_every else None)
    elif args.input and not is_text_input(args.input):
        plan = plan_local_documents(args, settings)
    else:
        path = Path(args.input[0]).expanduser() if args.input else BUNDLED_TEXT
        text, sha256 = read_text_file(path, args.encoding_errors)
        plan = Plan(display_path(path), sha256, "", settings, text=text)

    for docs in (plan.train_docs, plan.val_docs):
        if docs is not None:
            docs.check()
    plan.split = describe_split(plan, args)
    settings.update(source=plan.source, source_sha256=plan.source_sha256, split=plan.split)
    if args.streamed:
        plan.streams = document_streams(plan, args.val_every or DEFAULT_VAL_EVERY)
    return plan


def plan_local_documents(args: argparse.Namespace, settings: dict[str, Any]) -> Plan:
    files = expand_inputs(args.input, "--input")
    digests = sha256_of_files(files)
    source, source_sha256 = describe_files(files, digests)
    if len(files) > 1:
        settings["source_files"] = [{"file": display_path(p), "sha256": d} for p, d in zip(files, digests)]
    settings["text_field"] = args.text_field
    plan = Plan(source, source_sha256, "", settings, train_docs=LocalDocuments(files, args.text_field, args.encoding_errors))
    if args.val_input:
        val_files = expand_inputs(args.val_input, "--val_input")
        val_source, val_sha256 = describe_files(val_files, sha256_of_files(val_files))
        settings.update(val_source=val_source, val_source_sha256=val_sha256)
        plan.val_docs = LocalDocuments(val_files, args.text_field, args.encoding_errors)
    return plan


def describe_files(files: list[Path], digests: list[str]) -> tuple[str, str]:
    """Return a source name and SHA-256 for local files.

    One file is named by its path and hashed as itself. Several files are named by their common folder
    and count, and hashed as the text of `sha256sum`-style lines "DIGEST  PATH" in reading order.
    """
    if len(files) == 1:
        return display_path(files[0]), digests[0]
    folder = Path(os.path.commonpath([str(p.resolve().parent) for p in files]))
    listing = "".join(f"{d}  {display_path(p)}\n" for p, d in zip(files, digests))
    name = f"{display_path(folder)} ({len(files)} {files[0].suffix.lower()} files)"
    return name, hashlib.sha256(listing.encode("utf-8")).hexdigest()


def describe_split(plan: Plan, args: argparse.Namespace) -> str:
    """Return the one-sentence split rule stored in meta.json."""
    if plan.text is not None:
        tokenized = "The text is tokenized as a whole,"
    elif args.tokenizer == "gpt2":
        tokenized = "Documents are tokenized in order, each followed by end-of-text token 50256,"
    else:
        tokenized = "Documents are joined in order with two newlines and tokenized,"
    if plan.val_docs is not None:
        if args.hf:
            return f"{tokenized} and train is the hub dataset's train split and val its validation split."
        return f"{tokenized} and train is the --input documents and val the --val_input documents."
    if args.streamed:
        n = args.val_every or DEFAULT_VAL_EVERY
        return (
            f"{tokenized} and document i (counting from 0) is val when i % {n} == {n - 1}, "
            f"so every {n}th document is val and the rest are train."
        )
    train_percent = f"{(1.0 - args.val_fraction) * 100:g}%"
    val_percent = f"{args.val_fraction * 100:g}%"
    return (
        f"{tokenized} then the first {train_percent} of the tokens are train "
        f"and the last {val_percent} are val."
    )


def document_streams(plan: Plan, val_every: int) -> list[Stream]:
    if plan.val_docs is None:
        return [Stream(plan.train_docs, "train+val", val_every=val_every)]
    return [Stream(plan.train_docs, "train", split="train"), Stream(plan.val_docs, "val", split="val")]


# ---------------------------------------------------------------------------
# Preparing


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Prepare one dataset from the command-line arguments `argv` and return its meta dict."""
    args = parse_args(argv)
    check_args(args)
    out_dir = Path(args.out_dir).expanduser() if args.out_dir else DATA_DIR / args.name

    plan = plan_preparation(args)
    finished = check_existing_output(out_dir, plan.settings, args.overwrite)
    if finished is not None:
        return finished
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.streamed:
        meta = prepare_streamed(out_dir, plan, args)
    else:
        meta = prepare_in_memory(out_dir, plan, args)
    print_summary(out_dir, meta)
    return meta


def check_existing_output(out_dir: Path, settings: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """Return the meta of a finished preparation with the same settings, or None to go on preparing.

    Raise SystemExit when out_dir contains data prepared with other settings, unless `overwrite`. An
    unfinished preparation with the same settings is left for prepare_streamed to resume.
    """
    meta = shards.read_json(out_dir / "meta.json")
    state = shards.read_json(out_dir / shards.STATE_FILE)
    if meta is not None and meta.get("settings") == settings and not overwrite:
        print(
            f"{out_dir}: already prepared from the same source with the same settings; left unchanged "
            "(pass --overwrite to prepare it again)"
        )
        return meta
    if overwrite:
        return None
    if meta is not None:
        if not meta:
            raise fail(f"{out_dir / 'meta.json'} is unreadable; pass --overwrite to prepare the dataset again")
        if "settings" not in meta:
            raise fail(
                f"{out_dir} already contains data prepared from {meta.get('source')!r} by an older prepare.py "
                "(meta.json has no settings); train.py still reads it, or pass --overwrite to prepare it again"
            )
        raise fail(
            f"{out_dir} already contains data prepared from {meta.get('source')!r} with other settings "
            f"({describe_differences(meta['settings'], settings)}); pass --overwrite to replace it, "
            "or choose another dataset name or --out_dir"
        )
    if state is not None and state.get("settings") != settings:
        before = state.get("settings") if isinstance(state.get("settings"), dict) else {}
        raise fail(
            f"{out_dir} contains an unfinished preparation with other settings "
            f"({describe_differences(before, settings)}); rerun with its options to continue it, "
            "or pass --overwrite to start over"
        )
    return None


def describe_differences(before: dict[str, Any], now: dict[str, Any]) -> str:
    keys = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    return ", ".join(f"{k}: {shorten(before.get(k))} before, {shorten(now.get(k))} now" for k in keys)


def shorten(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def prepare_streamed(out_dir: Path, plan: Plan, args: argparse.Namespace) -> dict[str, Any]:
    """Tokenize document streams into shards, resuming an unfinished run with the same settings."""
    tokenizer = load_gpt2_tokenizer(args.gpt2_ranks)
    dtype = token_dtype(tokenizer.vocab_size)
    if args.overwrite:
        shards.remove_outputs(out_dir)
    state = shards.read_json(out_dir / shards.STATE_FILE)
    if state is None:
        (out_dir / "meta.json").unlink(missing_ok=True)
        state = shards.new_state(plan.settings)
        shards.save_state(out_dir, state)
    else:
        shards.check_recorded_shards(out_dir, state, dtype)
        done = ", ".join(f"{len(r['shards'])} {split}" for split, r in state["splits"].items())
        print(f"{out_dir}: resuming an unfinished preparation ({done} shards complete)")

    try:
        writers = shards.run_streams(
            out_dir, plan.streams, state, args.shard_tokens, dtype, args.num_proc, args.gpt2_ranks
        )
    except KeyboardInterrupt:
        done = sum(len(r["shards"]) for r in state["splits"].values())
        print(
            f"interrupted; {done} complete shards are kept in {out_dir}; rerun the same command to continue",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_INTERRUPTED) from None

    counts = {split: writer.tokens() for split, writer in writers.items()}
    if counts["train"] == 0 or counts["val"] == 0:
        hint = "a smaller --val_every" if plan.val_docs is None else "more documents in each split"
        raise fail(
            f"corpus too small: {counts['train']} train and {counts['val']} val tokens; "
            f"use a bigger corpus or {hint}"
        )
    meta = build_meta(args, plan, tokenizer, writers)
    meta["documents"] = {split: state["documents"][split] for split in shards.SPLITS}
    shards.write_json_atomic(out_dir / "meta.json", meta)
    (out_dir / shards.STATE_FILE).unlink()
    return meta


def prepare_in_memory(out_dir: Path, plan: Plan, args: argparse.Namespace) -> dict[str, Any]:
    """Tokenize a single text, or a char-level corpus, as a whole and write it."""
    tokenizer, train, val = tokenize_in_memory(plan, args)
    if len(train) == 0 or len(val) == 0:
        raise fail(
            f"corpus too small: {len(train)} train and {len(val)} val tokens; "
            "use a bigger corpus or a different --val_fraction"
        )
    # The old data is deleted only now, so a corpus that fails to tokenize leaves it in place.
    if args.overwrite:
        shards.remove_outputs(out_dir)
    (out_dir / "meta.json").unlink(missing_ok=True)
    dtype = token_dtype(tokenizer.vocab_size)
    arrays = {"train": train.astype(dtype, copy=False), "val": val.astype(dtype, copy=False)}
    writers = shards.write_arrays(out_dir, arrays, args.shard_tokens)
    meta = build_meta(args, plan, tokenizer, writers)
    shards.write_json_atomic(out_dir / "meta.json", meta)
    return meta


def tokenize_in_memory(plan: Plan, args: argparse.Namespace) -> tuple[Tokenizer, np.ndarray, np.ndarray]:
    if args.tokenizer == "char":
        return tokenize_char_corpus(plan, args.val_fraction)
    tokenizer = load_gpt2_tokenizer(args.gpt2_ranks)
    train, val = split_by_position(encode_gpt2_text(tokenizer, plan.text), args.val_fraction)
    return tokenizer, train, val


def tokenize_char_corpus(plan: Plan, val_fraction: float) -> tuple[CharTokenizer, np.ndarray, np.ndarray]:
    """Build the char table from all of the corpus's text, then tokenize it."""
    if plan.text is not None:
        train_text = plan.text
    else:
        train_text = CHAR_DOCUMENT_SEPARATOR.join(read_all_texts(plan.train_docs))
    val_text = None
    if plan.val_docs is not None:
        val_text = CHAR_DOCUMENT_SEPARATOR.join(read_all_texts(plan.val_docs))

    chars = set(train_text)
    if val_text is not None:
        chars.update(val_text)
    if not chars:
        raise fail(f"{plan.source} contains no text; pass a corpus with non-empty documents")
    tokenizer = CharTokenizer(sorted(chars))

    if val_text is not None:
        train = encode_char_text(tokenizer, train_text)
        val = encode_char_text(tokenizer, val_text)
        return tokenizer, train, val
    train, val = split_by_position(encode_char_text(tokenizer, train_text), val_fraction)
    return tokenizer, train, val


def build_meta(
    args: argparse.Namespace, plan: Plan, tokenizer: Tokenizer, writers: dict[str, shards.SplitWriter]
) -> dict[str, Any]:
    return {
        "dataset": args.name,
        "tokenizer": tokenizer.describe(),
        "vocab_size": tokenizer.vocab_size,
        "dtype": token_dtype(tokenizer.vocab_size).name,
        "train_tokens": writers["train"].tokens(),
        "val_tokens": writers["val"].tokens(),
        "source": plan.source,
        "source_sha256": plan.source_sha256,
        "split": plan.split,
        "shards": {split: writer.shards for split, writer in writers.items()},
        "settings": plan.settings,
    }


def print_summary(out_dir: Path, meta: dict[str, Any]) -> None:
    out_dir = out_dir.resolve()
    if out_dir.is_relative_to(Path.cwd()):
        out_dir = out_dir.relative_to(Path.cwd())
    kind = meta["tokenizer"]["kind"]
    print(f"{meta['dataset']}: {kind} tokenizer, vocab_size {meta['vocab_size']}")
    for split in shards.SPLITS:
        files = meta["shards"][split]
        where = out_dir / files[0]["file"]
        if len(files) > 1:
            where = f"{where} ... {files[-1]['file']} ({len(files)} shards)"
        documents = f", {meta['documents'][split]:,} documents" if "documents" in meta else ""
        print(f"  {split + ':':<6} {meta[f'{split}_tokens']:>14,} tokens{documents} -> {where}")
    print(f"  meta:  {out_dir / 'meta.json'}")


if __name__ == "__main__":
    main()
