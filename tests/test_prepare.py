"""Tests for tokenizer.py and data/prepare.py. They run offline on the bundled data files."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import tiktoken
import tiktoken.load

import shards
import tokenizer
from tokenizer import (
    CharTokenizer,
    GPT2Tokenizer,
    load_gpt2_encoding,
    tokenizer_from_description,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE_PATH = REPO_ROOT / "data" / "tinyshakespeare.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_CHARS = 1_115_394

TRICKY_STRINGS = [
    "Hello world",
    "naïve café, Ünïcödé, 日本語, emoji 🙂 and a combining e\u0301",
    "two  spaces,   three spaces,\ttab and trailing space ",
    "line one\nline two\n\n\nafter blank lines\r\nwindows line\n",
    "   leading spaces and it's, we'll, I'd, they're",
    "<|endoftext|> is plain text here",
    "",
]


def load_prepare_module():
    spec = importlib.util.spec_from_file_location("prepare", REPO_ROOT / "data" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    # dataclasses look up the defining module in sys.modules.
    sys.modules["prepare"] = module
    spec.loader.exec_module(module)
    return module


prepare = load_prepare_module()


@pytest.fixture(scope="module")
def shakespeare_text() -> str:
    return SHAKESPEARE_PATH.read_text(encoding="utf-8")


def local_gpt2_ranks() -> Path | None:
    """Return $GPT2_TIKTOKEN_RANKS if set, else the bundled ranks file if present."""
    env_path = os.environ.get(tokenizer.GPT2_RANKS_ENV)
    if env_path:
        return Path(env_path)
    if tokenizer.BUNDLED_GPT2_RANKS.is_file():
        return tokenizer.BUNDLED_GPT2_RANKS
    return None


@pytest.fixture(scope="module")
def gpt2() -> GPT2Tokenizer:
    """GPT-2 tokenizer from local ranks, else from tiktoken's download."""
    ranks = local_gpt2_ranks()
    if ranks is not None:
        return GPT2Tokenizer(load_gpt2_encoding(str(ranks)))
    try:
        return GPT2Tokenizer(tiktoken.get_encoding("gpt2"))
    except (OSError, ValueError) as exc:
        pytest.skip(
            f"no GPT-2 ranks: {tokenizer.GPT2_RANKS_ENV} is unset, data/gpt2.tiktoken is "
            f"missing and tiktoken could not download them ({exc})"
        )


def read_tokens(path: Path, dtype: str) -> np.ndarray:
    return np.fromfile(path, dtype=np.dtype(dtype).newbyteorder("<"))


def run_prepare(out_dir: Path, *args: str) -> dict:
    return prepare.main([*args, f"--out_dir={out_dir}", f"--cache_dir={out_dir / 'hf-cache'}"])


# ---------------------------------------------------------------------------
# tokenizer.py


def test_gpt2_hello_world(gpt2: GPT2Tokenizer) -> None:
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.vocab_size == 50257
    assert gpt2.eot_token == 50256


def test_gpt2_default_constructors() -> None:
    ranks = local_gpt2_ranks()
    if ranks is None:
        pytest.skip("needs $GPT2_TIKTOKEN_RANKS or data/gpt2.tiktoken")
    assert GPT2Tokenizer.from_ranks(str(ranks)).encode("Hello world") == [15496, 995]
    if os.environ.get(tokenizer.GPT2_RANKS_ENV) is None:
        assert GPT2Tokenizer().encode("Hello world") == [15496, 995]


def test_gpt2_rejects_other_encoding(gpt2: GPT2Tokenizer) -> None:
    other = tiktoken.Encoding(
        name="tiny", pat_str=r"\S+|\s+", mergeable_ranks={b"a": 0, b"b": 1}, special_tokens={}
    )
    with pytest.raises(ValueError, match="load_gpt2_encoding"):
        GPT2Tokenizer(other)


def test_gpt2_matches_tiktoken_special_token(gpt2: GPT2Tokenizer) -> None:
    assert gpt2.encoding.encode("<|endoftext|>", allowed_special="all") == [50256]
    assert gpt2.encode("<|endoftext|>") != [50256]


def test_gpt2_round_trip_shakespeare(gpt2: GPT2Tokenizer, shakespeare_text: str) -> None:
    ids = gpt2.encode(shakespeare_text)
    assert gpt2.decode(ids) == shakespeare_text
    assert gpt2.decode(np.array(ids, dtype=np.uint16)) == shakespeare_text


@pytest.mark.parametrize("text", TRICKY_STRINGS)
def test_gpt2_round_trip_tricky(gpt2: GPT2Tokenizer, text: str) -> None:
    assert gpt2.decode(gpt2.encode(text)) == text


def test_gpt2_pattern_matches_tiktoken(gpt2: GPT2Tokenizer, shakespeare_text: str) -> None:
    """Compare with tiktoken's own GPT-2 split pattern, applied to the same ranks."""
    openai_public = pytest.importorskip("tiktoken_ext.openai_public")
    tiktoken_pattern = getattr(openai_public, "r50k_pat_str", None)
    ranks = local_gpt2_ranks()
    if tiktoken_pattern is None or ranks is None:
        pytest.skip("needs tiktoken_ext.openai_public.r50k_pat_str and a local ranks file")
    reference = tiktoken.Encoding(
        name="gpt2-reference",
        pat_str=tiktoken_pattern,
        mergeable_ranks=tiktoken.load.load_tiktoken_bpe(str(ranks)),
        special_tokens={"<|endoftext|>": 50256},
    )
    for text in [*TRICKY_STRINGS, "end with spaces   ", "a \n\n b\t\t\nc  \r\n", shakespeare_text]:
        assert gpt2.encode(text) == reference.encode_ordinary(text), text[:40]


def test_gpt2_encode_batch_matches_encode(gpt2: GPT2Tokenizer) -> None:
    assert gpt2.encode_batch(TRICKY_STRINGS) == [gpt2.encode(t) for t in TRICKY_STRINGS]


def test_char_round_trip_shakespeare(shakespeare_text: str) -> None:
    char = CharTokenizer.from_text(shakespeare_text)
    assert char.vocab_size == 65
    assert char.decode(char.encode(shakespeare_text)) == shakespeare_text


@pytest.mark.parametrize("text", [t for t in TRICKY_STRINGS if t])
def test_char_round_trip_tricky(text: str) -> None:
    char = CharTokenizer.from_text(text)
    assert char.decode(char.encode(text)) == text
    assert char.chars == sorted(set(text))


def test_char_encode_missing_character() -> None:
    char = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError) as error:
        char.encode("abzcé z")
    message = str(error.value)
    assert "'z'" in message
    assert "'é'" in message
    assert message.count("'z'") == 1
    assert message.index("'z'") < message.index("'é'")
    assert "prepared corpus" in message
    assert "\n" not in message


def test_char_decode_out_of_range() -> None:
    with pytest.raises(ValueError, match="outside the char vocabulary"):
        CharTokenizer.from_text("abc").decode([0, 3])


def test_char_rejects_bad_vocabulary() -> None:
    with pytest.raises(ValueError, match="more than once"):
        CharTokenizer(["a", "b", "a"])
    with pytest.raises(ValueError, match="exactly one character"):
        CharTokenizer(["ab"])
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.from_text("")


def test_char_describe_is_plain_json() -> None:
    desc = CharTokenizer.from_text("hello\n").describe()
    assert desc == {"kind": "char", "vocab_size": 5, "chars": ["\n", "e", "h", "l", "o"]}
    assert json.loads(json.dumps(desc)) == desc


def test_description_round_trip_char() -> None:
    char = CharTokenizer.from_text("To be, or not to be\n")
    rebuilt = tokenizer_from_description(json.loads(json.dumps(char.describe())))
    assert isinstance(rebuilt, CharTokenizer)
    assert rebuilt.chars == char.chars
    assert rebuilt.encode("not to be") == char.encode("not to be")


def test_description_round_trip_gpt2(gpt2: GPT2Tokenizer) -> None:
    desc = gpt2.describe()
    assert desc == {"kind": "gpt2", "vocab_size": 50257, "eot_token": 50256}
    ranks = os.environ.get(tokenizer.GPT2_RANKS_ENV)
    rebuilt = tokenizer_from_description(json.loads(json.dumps(desc)), gpt2_ranks=ranks)
    assert isinstance(rebuilt, GPT2Tokenizer)
    assert rebuilt.encode(TRICKY_STRINGS[1]) == gpt2.encode(TRICKY_STRINGS[1])


def test_description_unknown_kind() -> None:
    with pytest.raises(ValueError) as error:
        tokenizer_from_description({"kind": "sentencepiece"})
    assert "'sentencepiece'" in str(error.value)
    assert "char, gpt2" in str(error.value)


def test_description_char_vocab_size_mismatch() -> None:
    with pytest.raises(ValueError, match="vocab_size 3"):
        tokenizer_from_description({"kind": "char", "vocab_size": 3, "chars": ["a", "b"]})


def test_load_encoding_missing_explicit_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tiktoken"
    with pytest.raises(FileNotFoundError, match="nope.tiktoken"):
        load_gpt2_encoding(str(missing))


def test_load_encoding_missing_env_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tokenizer.GPT2_RANKS_ENV, str(tmp_path / "env.tiktoken"))
    with pytest.raises(FileNotFoundError, match=tokenizer.GPT2_RANKS_ENV):
        load_gpt2_encoding()


def test_load_encoding_not_a_ranks_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty TIKTOKEN_CACHE_DIR stops tiktoken from copying the file into its cache.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("this is not base64 and rank\n")
    with pytest.raises(ValueError, match="bad.tiktoken"):
        load_gpt2_encoding(str(bad))


def test_load_encoding_wrong_rank_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    short = tmp_path / "short.tiktoken"
    short.write_text("IQ== 0\nIg== 1\n")
    with pytest.raises(ValueError, match="contains 2 ranks"):
        load_gpt2_encoding(str(short))


def test_load_encoding_without_any_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail_download(name: str) -> tiktoken.Encoding:
        raise ConnectionError(f"no network for {name}")

    monkeypatch.delenv(tokenizer.GPT2_RANKS_ENV, raising=False)
    monkeypatch.setattr(tokenizer, "BUNDLED_GPT2_RANKS", tmp_path / "missing.tiktoken")
    monkeypatch.setattr(tiktoken, "get_encoding", fail_download)
    with pytest.raises(RuntimeError) as error:
        load_gpt2_encoding()
    message = str(error.value)
    assert "could not download" in message
    assert "--gpt2_ranks=PATH" in message
    assert tokenizer.GPT2_RANKS_ENV in message
    assert "\n" not in message


# ---------------------------------------------------------------------------
# data/prepare.py: Shakespeare


def test_prepare_shakespeare_char(tmp_path: Path, shakespeare_text: str) -> None:
    meta = run_prepare(tmp_path, "shakespeare_char")
    n_train = int(SHAKESPEARE_CHARS * 0.9)

    assert meta["vocab_size"] == 65
    assert meta["tokenizer"]["kind"] == "char"
    assert meta["train_tokens"] + meta["val_tokens"] == SHAKESPEARE_CHARS
    assert meta["train_tokens"] == n_train
    assert meta["dtype"] == "uint16"
    assert meta["source"] == "data/tinyshakespeare.txt"
    assert meta["source_sha256"] == SHAKESPEARE_SHA256
    assert "90%" in meta["split"]
    assert json.loads((tmp_path / "meta.json").read_text()) == meta

    char = tokenizer_from_description(meta["tokenizer"])
    train = read_tokens(tmp_path / "train.bin", meta["dtype"])
    val = read_tokens(tmp_path / "val.bin", meta["dtype"])
    assert (tmp_path / "train.bin").stat().st_size == 2 * n_train
    assert char.decode(train) == shakespeare_text[:n_train]
    assert char.decode(val) == shakespeare_text[n_train:]


def test_prepare_shakespeare_gpt2(
    tmp_path: Path, gpt2: GPT2Tokenizer, shakespeare_text: str
) -> None:
    meta = run_prepare(tmp_path, "shakespeare", "--tokenizer=gpt2")
    whole = gpt2.encode(shakespeare_text)

    assert meta["tokenizer"] == gpt2.describe()
    assert meta["dtype"] == "uint16"
    assert meta["train_tokens"] + meta["val_tokens"] == len(whole)
    assert meta["train_tokens"] == int(len(whole) * 0.9)
    assert meta["source_sha256"] == SHAKESPEARE_SHA256

    train = read_tokens(tmp_path / "train.bin", meta["dtype"])
    val = read_tokens(tmp_path / "val.bin", meta["dtype"])
    assert np.concatenate([train, val]).tolist() == whole


def test_gpt2_chunked_equals_whole_shakespeare(gpt2: GPT2Tokenizer, shakespeare_text: str) -> None:
    chunks = prepare.split_at_line_ends(shakespeare_text, 10_000)
    assert len(chunks) > 100
    assert "".join(chunks) == shakespeare_text
    chunked = prepare.encode_gpt2_text(gpt2, shakespeare_text, chunk_chars=10_000)
    assert chunked.tolist() == gpt2.encode(shakespeare_text)


def test_gpt2_chunked_equals_whole_tricky_whitespace(gpt2: GPT2Tokenizer) -> None:
    lines = [
        "plain", " leading space", "\tleading tab", "", "   ", "'s contraction", "42 digits",
        "\u00a0no-break space", "\u3000ideographic space", "trailing spaces   ", "carriage\r",
        "!!! symbols", "é accent",
    ]
    text = "\n".join(lines * 20) + "\n"
    chunks = prepare.split_at_line_ends(text, 1)
    assert "".join(chunks) == text
    assert len(chunks) > len(lines) * 10
    for chunk in chunks[1:]:
        assert chunk[0] in "\r\n"
    chunked = prepare.encode_gpt2_text(gpt2, text, chunk_chars=1)
    assert chunked.tolist() == gpt2.encode(text)


# ---------------------------------------------------------------------------
# data/prepare.py: documents


DOCUMENTS = [
    "First document.\nIt has two lines.",
    "Second: ünïcödé and  two spaces",
    "<|endoftext|> written as plain text",
    "",
    "Last one, it's short",
]


def write_jsonl(path: Path, texts: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(texts * 4):
            f.write(json.dumps({"id": i, "text": text}) + "\n")


def write_parquet(path: Path, texts: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": texts * 4, "id": list(range(len(texts) * 4))}), path)


def split_at_eot(tokens: list[int], eot: int) -> list[list[int]]:
    docs = [[]]
    for token in tokens:
        if token == eot:
            docs.append([])
        else:
            docs[-1].append(token)
    return docs


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_prepare_documents_gpt2(tmp_path: Path, gpt2: GPT2Tokenizer, suffix: str) -> None:
    corpus = tmp_path / f"corpus{suffix}"
    if suffix == ".jsonl":
        write_jsonl(corpus, DOCUMENTS)
        field = "text"
    else:
        write_parquet(corpus, DOCUMENTS)
        field = "body"
    out_dir = tmp_path / "out"
    meta = run_prepare(out_dir, "docs", f"--input={corpus}", f"--text_field={field}", "--shard_tokens=0")

    assert meta["tokenizer"]["kind"] == "gpt2"
    assert meta["source_sha256"] == hashlib.sha256(corpus.read_bytes()).hexdigest()
    assert "50256" in meta["split"]
    assert "i % 10 == 9" in meta["split"]
    assert meta["documents"] == {"train": 18, "val": 2}
    train = read_tokens(out_dir / "train.bin", meta["dtype"]).tolist()
    val = read_tokens(out_dir / "val.bin", meta["dtype"]).tolist()
    assert train[-1] == 50256
    assert val[-1] == 50256

    # Document i is val when i % 10 == 9: documents 9 and 19, both the last of DOCUMENTS.
    documents = DOCUMENTS * 4
    train_docs = split_at_eot(train, 50256)
    val_docs = split_at_eot(val, 50256)
    assert train_docs[-1] == []
    assert val_docs[-1] == []
    assert [gpt2.decode(doc) for doc in train_docs[:-1]] == [d for i, d in enumerate(documents) if i % 10 != 9]
    assert [gpt2.decode(doc) for doc in val_docs[:-1]] == [documents[9], documents[19]]


def test_prepare_documents_char(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    write_jsonl(corpus, DOCUMENTS)
    out_dir = tmp_path / "out"
    meta = run_prepare(out_dir, "docs_char", f"--input={corpus}", "--tokenizer=char")

    joined = "\n\n".join(DOCUMENTS * 4)
    assert meta["tokenizer"]["chars"] == sorted(set(joined))
    assert meta["train_tokens"] + meta["val_tokens"] == len(joined)
    char = tokenizer_from_description(meta["tokenizer"])
    train = read_tokens(out_dir / "train.bin", meta["dtype"])
    val = read_tokens(out_dir / "val.bin", meta["dtype"])
    assert char.decode(train) + char.decode(val) == joined


def test_prepare_hub_validation_split(
    tmp_path: Path, gpt2: GPT2Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    splits = datasets.IterableDatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["one story", "two story"]}).to_iterable_dataset(),
            "validation": datasets.Dataset.from_dict({"text": ["held out"]}).to_iterable_dataset(),
        }
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: splits)
    meta = run_prepare(tmp_path, "hubdata", "--hf=someone/stories", "--shard_tokens=0")

    assert meta["source"] == "someone/stories"
    assert meta["source_sha256"] is None
    assert "validation split" in meta["split"]
    val = read_tokens(tmp_path / "val.bin", meta["dtype"]).tolist()
    assert val == gpt2.encode("held out") + [50256]
    assert meta["train_tokens"] == len(gpt2.encode("one story")) + len(gpt2.encode("two story")) + 2


def test_prepare_hub_load_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def fail_load(*args, **kwargs):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(datasets, "load_dataset", fail_load)
    with pytest.raises(SystemExit) as error:
        run_prepare(tmp_path, "tinystories", "--hf=roneneldan/TinyStories")
    message = str(error.value)
    assert message.startswith("error: ")
    assert "roneneldan/TinyStories" in message
    assert "--input" in message
    assert "\n" not in message


def test_prepare_missing_text_field(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.parquet"
    write_parquet(corpus, DOCUMENTS)
    with pytest.raises(SystemExit, match="no column 'text'.*body"):
        run_prepare(tmp_path / "out", "docs", f"--input={corpus}")


# ---------------------------------------------------------------------------
# data/prepare.py: input checks and output files


def test_token_dtype_choice() -> None:
    assert prepare.token_dtype(65) == np.dtype("<u2")
    assert prepare.token_dtype(50257) == np.dtype("<u2")
    assert prepare.token_dtype(65536) == np.dtype("<u2")
    assert prepare.token_dtype(65537) == np.dtype("<u4")
    assert prepare.token_dtype(200_000).name == "uint32"
    with pytest.raises(ValueError):
        prepare.token_dtype(2**32 + 1)


def test_missing_input_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    with pytest.raises(SystemExit) as error:
        run_prepare(tmp_path / "out", "mine", f"--input={missing}")
    message = str(error.value)
    assert message.startswith("error: input file not found")
    assert str(missing) in message
    assert not (tmp_path / "out").exists()


def test_empty_input_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(SystemExit, match="error: input file is empty"):
        run_prepare(tmp_path / "out", "mine", f"--input={empty}")


def test_name_needs_source(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--input=PATH"):
        run_prepare(tmp_path, "mine")


def test_bom_dropped(tmp_path: Path) -> None:
    source = tmp_path / "bom.txt"
    source.write_bytes(b"\xef\xbb\xbf" + "hello there\n".encode() * 5)
    meta = run_prepare(tmp_path / "out", "bom", f"--input={source}", "--tokenizer=char")
    assert "\ufeff" not in meta["tokenizer"]["chars"]
    assert meta["train_tokens"] + meta["val_tokens"] == len("hello there\n") * 5
    assert meta["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


def test_invalid_utf8_names_offset(tmp_path: Path) -> None:
    source = tmp_path / "latin1.txt"
    source.write_bytes(b"\xef\xbb\xbfcaf\xe9 au lait\n")
    with pytest.raises(SystemExit) as error:
        run_prepare(tmp_path / "out", "latin", f"--input={source}", "--tokenizer=char")
    assert "byte offset 6" in str(error.value)
    assert "--encoding_errors=replace" in str(error.value)

    meta = run_prepare(
        tmp_path / "out",
        "latin",
        f"--input={source}",
        "--tokenizer=char",
        "--encoding_errors=replace",
    )
    assert "\ufffd" in meta["tokenizer"]["chars"]


def test_corpus_too_small(tmp_path: Path) -> None:
    source = tmp_path / "one.txt"
    source.write_text("x")
    with pytest.raises(SystemExit, match="corpus too small"):
        run_prepare(tmp_path / "out", "one", f"--input={source}", "--tokenizer=char")


def test_write_atomic_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "train.bin"
    target.write_bytes(b"old")

    def write_half(f) -> None:
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        shards.write_atomic(target, write_half)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["train.bin"]


def test_rerun_with_same_source_leaves_files(tmp_path: Path) -> None:
    source = tmp_path / "text.txt"
    source.write_text("abcdefghij" * 10)
    run_prepare(tmp_path / "out", "letters", f"--input={source}", "--tokenizer=char")
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    run_prepare(tmp_path / "out", "letters", f"--input={source}", "--tokenizer=char")
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == before


def test_changed_source_needs_overwrite(tmp_path: Path) -> None:
    source = tmp_path / "text.txt"
    source.write_text("abcdefghij" * 10)
    run_prepare(tmp_path / "out", "letters", f"--input={source}", "--tokenizer=char")
    saved = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    source.write_text("0123456789" * 20)
    with pytest.raises(SystemExit, match="already contains data prepared from .* pass --overwrite"):
        run_prepare(tmp_path / "out", "letters", f"--input={source}", "--tokenizer=char")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == saved


def test_rerun_with_overwrite_replaces_outputs(tmp_path: Path) -> None:
    source = tmp_path / "text.txt"
    source.write_text("abcdefghij" * 10)
    run_prepare(tmp_path / "out", "letters", f"--input={source}", "--tokenizer=char")
    source.write_text("0123456789" * 20)
    meta = run_prepare(tmp_path / "out", "letters", f"--input={source}", "--tokenizer=char", "--overwrite")
    assert meta["train_tokens"] + meta["val_tokens"] == 200
    assert json.loads((tmp_path / "out" / "meta.json").read_text()) == meta
    assert sorted(os.listdir(tmp_path / "out")) == ["meta.json", "train.bin", "val.bin"]


def test_overwrite_keeps_data_when_tokenizing_fails(tmp_path: Path) -> None:
    source = tmp_path / "text.txt"
    source.write_text("abcdefghij" * 10)
    run_prepare(tmp_path / "out", "letters", f"--input={source}", "--tokenizer=char")
    saved = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    source.write_text("x")
    with pytest.raises(SystemExit, match="corpus too small"):
        run_prepare(tmp_path / "out", "letters", f"--input={source}", "--tokenizer=char", "--overwrite")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == saved
