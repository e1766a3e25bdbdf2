"""Tokenizers shared by data preparation, training and sampling.

Two kinds exist: a character-level tokenizer whose vocabulary is the sorted
set of characters of a prepared corpus, and GPT-2's byte-level BPE through
tiktoken. Each tokenizer's `describe()` output is a plain dict that is stored
in a dataset's meta.json and in checkpoints, and `tokenizer_from_description`
rebuilds the tokenizer from it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Union

import tiktoken
import tiktoken.load

GPT2_VOCAB_SIZE = 50257
GPT2_EOT_TOKEN = 50256
GPT2_EOT_TEXT = "<|endoftext|>"

# GPT-2's pre-tokenizer: English contractions, then runs of letters, runs of
# digits and runs of other symbols (each optionally led by one space), then
# whitespace. BPE merges never cross the boundaries between these pieces.
GPT2_SPLIT_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)

GPT2_RANKS_ENV = "GPT2_TIKTOKEN_RANKS"
BUNDLED_GPT2_RANKS = Path(__file__).resolve().parent / "data" / "gpt2.tiktoken"


def _ids_to_list(ids: Iterable[int]) -> list[int]:
    """Convert token ids given as a list, numpy array or torch tensor to a list of ints."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [int(i) for i in ids]


class CharTokenizer:
    """Character-level tokenizer: token id i is the i-th character of `chars`."""

    kind = "char"

    def __init__(self, chars: list[str]) -> None:
        if not chars:
            raise ValueError("vocabulary is empty: a char tokenizer needs at least one character")
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(
                    f"invalid vocabulary entry {c!r}: every entry must be a string of "
                    "exactly one character"
                )
        if len(set(chars)) != len(chars):
            duplicates = sorted({c for c in chars if chars.count(c) > 1})
            raise ValueError(
                f"vocabulary lists these characters more than once: "
                f"{', '.join(repr(c) for c in duplicates)}"
            )
        self.chars = list(chars)
        self.vocab_size = len(self.chars)
        self._id_of = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Build the vocabulary from the sorted set of characters in `text`."""
        if not text:
            raise ValueError("cannot build a character vocabulary from empty text")
        return cls(sorted(set(text)))

    def encode(self, text: str) -> list[int]:
        try:
            return [self._id_of[c] for c in text]
        except KeyError:
            missing = sorted({c for c in text if c not in self._id_of})
            raise ValueError(
                f"text contains {len(missing)} character(s) that are not in the vocabulary: "
                f"{', '.join(repr(c) for c in missing)}; the char vocabulary comes from the "
                "prepared corpus, so use only characters that occur in it"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        id_list = _ids_to_list(ids)
        bad = sorted({i for i in id_list if not 0 <= i < self.vocab_size})
        if bad:
            raise ValueError(
                f"token ids {bad[:10]} are outside the char vocabulary "
                f"(valid ids are 0..{self.vocab_size - 1})"
            )
        return "".join(self.chars[i] for i in id_list)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "chars": list(self.chars)}


class GPT2Tokenizer:
    """GPT-2 byte-level BPE. Without an `encoding`, it loads one with `load_gpt2_encoding()`."""

    kind = "gpt2"

    def __init__(self, encoding: tiktoken.Encoding | None = None) -> None:
        if encoding is None:
            encoding = load_gpt2_encoding()
        eot = None
        if GPT2_EOT_TEXT in encoding.special_tokens_set:
            eot = encoding.encode_single_token(GPT2_EOT_TEXT)
        if encoding.n_vocab != GPT2_VOCAB_SIZE or eot != GPT2_EOT_TOKEN:
            raise ValueError(
                f"encoding {encoding.name!r} has {encoding.n_vocab} tokens and end-of-text "
                f"id {eot}, but GPT-2 has {GPT2_VOCAB_SIZE} and {GPT2_EOT_TOKEN}; "
                "build it with load_gpt2_encoding()"
            )
        self.encoding = encoding
        self.vocab_size = GPT2_VOCAB_SIZE
        self.eot_token = GPT2_EOT_TOKEN

    @classmethod
    def from_ranks(cls, ranks_path: str | None = None) -> GPT2Tokenizer:
        """Load the encoding as `load_gpt2_encoding(ranks_path)` does and wrap it."""
        return cls(load_gpt2_encoding(ranks_path))

    def encode(self, text: str) -> list[int]:
        """Encode `text` as plain text, so "<|endoftext|>" in it becomes ordinary tokens."""
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode each text like `encode`, on several threads."""
        return self.encoding.encode_ordinary_batch(texts)

    def decode(self, ids: Iterable[int]) -> str:
        # Byte sequences that are not valid UTF-8 (a cut multi-byte character)
        # decode to U+FFFD instead of raising.
        return self.encoding.decode(_ids_to_list(ids))

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "eot_token": self.eot_token}


Tokenizer = Union[CharTokenizer, GPT2Tokenizer]
KNOWN_KINDS = (CharTokenizer.kind, GPT2Tokenizer.kind)


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _encoding_from_ranks_file(path: Path) -> tiktoken.Encoding:
    """Build GPT-2's encoding from a ranks file in tiktoken's format (base64 token, rank)."""
    # tiktoken (0.14) caches even local files under a key made from the path
    # alone. Passing the file's hash makes it notice a file that changed since.
    try:
        ranks = tiktoken.load.load_tiktoken_bpe(str(path), expected_hash=_file_sha256(path))
    except ValueError as exc:
        raise ValueError(
            f"{path} is not a tiktoken ranks file (expected lines of base64 token and rank): {exc}"
        ) from exc
    if len(ranks) != GPT2_EOT_TOKEN:
        raise ValueError(
            f"{path} contains {len(ranks)} ranks, but GPT-2 has {GPT2_EOT_TOKEN}; "
            "pass GPT-2's gpt2.tiktoken ranks file"
        )
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_SPLIT_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={GPT2_EOT_TEXT: GPT2_EOT_TOKEN},
        explicit_n_vocab=GPT2_VOCAB_SIZE,
    )


def load_gpt2_encoding(ranks_path: str | None = None) -> tiktoken.Encoding:
    """Load GPT-2's BPE encoding, equal to `tiktoken.get_encoding("gpt2")`.

    It uses the first of these that is given or exists:
    1. `ranks_path`, a gpt2.tiktoken ranks file,
    2. the file named by the GPT2_TIKTOKEN_RANKS environment variable,
    3. the repository's data/gpt2.tiktoken,
    4. tiktoken's own download, which needs network access.
    """
    if ranks_path is not None:
        path = Path(ranks_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"GPT-2 ranks file not found: {ranks_path}; pass the path of a gpt2.tiktoken file"
            )
        return _encoding_from_ranks_file(path)

    env_path = os.environ.get(GPT2_RANKS_ENV)
    if env_path:
        path = Path(env_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"GPT-2 ranks file not found: {env_path} (set by {GPT2_RANKS_ENV}); "
                f"fix or unset {GPT2_RANKS_ENV}"
            )
        return _encoding_from_ranks_file(path)

    if BUNDLED_GPT2_RANKS.is_file():
        return _encoding_from_ranks_file(BUNDLED_GPT2_RANKS)

    # requests' and urllib's network errors are OSErrors, and a download
    # with the wrong hash is a ValueError.
    try:
        return tiktoken.get_encoding("gpt2")
    except (OSError, ValueError) as exc:
        raise RuntimeError(
            "tiktoken could not download the GPT-2 files; pass --gpt2_ranks=PATH or set "
            f"{GPT2_RANKS_ENV} to a gpt2.tiktoken ranks file ({type(exc).__name__}: {exc})"
        ) from exc


def tokenizer_from_description(desc: dict[str, Any], gpt2_ranks: str | None = None) -> Tokenizer:
    """Rebuild a tokenizer from its `describe()` output, as stored in meta.json or a checkpoint."""
    kind = desc.get("kind")
    if kind == CharTokenizer.kind:
        if "chars" not in desc:
            raise ValueError("char tokenizer description has no 'chars' list")
        tokenizer = CharTokenizer(desc["chars"])
        if desc.get("vocab_size", tokenizer.vocab_size) != tokenizer.vocab_size:
            raise ValueError(
                f"char tokenizer description has vocab_size {desc['vocab_size']} but lists "
                f"{tokenizer.vocab_size} characters"
            )
        return tokenizer
    if kind == GPT2Tokenizer.kind:
        return GPT2Tokenizer(load_gpt2_encoding(gpt2_ranks))
    raise ValueError(
        f"unknown tokenizer kind {kind!r}; known kinds: {', '.join(KNOWN_KINDS)}"
    )
