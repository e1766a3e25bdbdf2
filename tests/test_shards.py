"""Streamed, sharded preparation of document corpora (shards.py, corpus.py, data/prepare.py), offline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import corpus
import shards
from conftest import load_prepare_module
from tokenizer import GPT2_EOT_TOKEN, GPT2Tokenizer, load_gpt2_encoding

prepare = load_prepare_module()


def make_documents(count: int) -> list[str]:
    """Documents of varied length, with Unicode, blank lines, an empty one and a literal end-of-text text."""
    documents = []
    for i in range(count):
        body = " ".join(f"word{j % 13}" for j in range(i % 29))
        documents.append(f"Story {i}: naïve café 🙂\n\n{body}  trailing ")
    documents[3] = ""
    documents[5] = "<|endoftext|> is plain text here"
    return documents


DOCUMENTS = make_documents(120)


@pytest.fixture(scope="module")
def gpt2() -> GPT2Tokenizer:
    return GPT2Tokenizer(load_gpt2_encoding())


def write_parquet(path: Path, texts: list[str], row_group_size: int = 16) -> Path:
    pq.write_table(pa.table({"text": texts, "id": list(range(len(texts)))}), path, row_group_size=row_group_size)
    return path


def write_jsonl(path: Path, texts: list[str]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": i, "text": text}) + "\n")
            if i % 17 == 0:
                f.write("\n")  # blank lines are not documents
    return path


def run_prepare(out_dir: Path, *args: str) -> dict:
    return prepare.main(["docs", f"--out_dir={out_dir}", "--num_proc=1", *args])


def read_split(out_dir: Path, split: str) -> np.ndarray:
    """Return a split's tokens, concatenated in the order meta.json lists its files."""
    meta = json.loads((out_dir / "meta.json").read_text())
    parts = [np.fromfile(out_dir / entry["file"], dtype="<u2") for entry in meta["shards"][split]]
    return np.concatenate(parts)


def output_files(out_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(out_dir.iterdir())}


def split_at_eot(tokens: np.ndarray) -> list[list[int]]:
    documents: list[list[int]] = [[]]
    for token in tokens.tolist():
        if token == GPT2_EOT_TOKEN:
            documents.append([])
        else:
            documents[-1].append(token)
    return documents


@pytest.fixture
def parquet_corpus(tmp_path: Path) -> Path:
    return write_parquet(tmp_path / "corpus.parquet", DOCUMENTS)


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read documents in batches of 7, so that a run has many batches and parquet skips row groups."""
    monkeypatch.setattr(corpus, "DOCUMENTS_PER_BATCH", 7)


# ---------------------------------------------------------------------------
# Sharded and single-file output


def test_sharded_equals_single_file(tmp_path: Path, parquet_corpus: Path) -> None:
    single = run_prepare(tmp_path / "single", f"--input={parquet_corpus}", "--shard_tokens=0")
    sharded = run_prepare(tmp_path / "sharded", f"--input={parquet_corpus}", "--shard_tokens=97")

    assert [entry["file"] for entry in single["shards"]["train"]] == ["train.bin"]
    assert [entry["file"] for entry in single["shards"]["val"]] == ["val.bin"]
    assert len(sharded["shards"]["train"]) > 3
    assert len(sharded["shards"]["val"]) > 1
    for split in ("train", "val"):
        single_tokens = np.fromfile(tmp_path / "single" / f"{split}.bin", dtype="<u2")
        np.testing.assert_array_equal(read_split(tmp_path / "sharded", split), single_tokens)
        assert sharded[f"{split}_tokens"] == single[f"{split}_tokens"]
    assert sharded["documents"] == single["documents"]


def test_shard_index_describes_files(tmp_path: Path, parquet_corpus: Path) -> None:
    out_dir = tmp_path / "out"
    meta = run_prepare(out_dir, f"--input={parquet_corpus}", "--shard_tokens=97")

    for split in ("train", "val"):
        entries = meta["shards"][split]
        assert [entry["file"] for entry in entries] == [f"{split}_{i:03d}.bin" for i in range(len(entries))]
        assert all(entry["tokens"] == 97 for entry in entries[:-1])
        assert 0 < entries[-1]["tokens"] <= 97
        assert sum(entry["tokens"] for entry in entries) == meta[f"{split}_tokens"]
        for entry in entries:
            data = (out_dir / entry["file"]).read_bytes()
            assert len(data) == 2 * entry["tokens"]
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert int(np.frombuffer(data, dtype="<u2").max()) == entry["max_token_id"]
    assert sorted(p.name for p in out_dir.iterdir() if not p.name.endswith(".bin")) == ["meta.json"]


def test_worker_count_keeps_output(tmp_path: Path, parquet_corpus: Path, small_batches: None) -> None:
    prepare.main(["docs", f"--input={parquet_corpus}", "--shard_tokens=97", f"--out_dir={tmp_path / 'one'}", "--num_proc=1"])
    prepare.main(["docs", f"--input={parquet_corpus}", "--shard_tokens=97", f"--out_dir={tmp_path / 'two'}", "--num_proc=2"])
    assert output_files(tmp_path / "one") == output_files(tmp_path / "two")


def test_jsonl_parquet_and_folder_agree(tmp_path: Path, small_batches: None) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    write_parquet(folder / "part_0.parquet", DOCUMENTS[:50])
    write_parquet(folder / "part_1.parquet", DOCUMENTS[50:51])
    write_parquet(folder / "part_2.parquet", DOCUMENTS[51:])
    jsonl = write_jsonl(tmp_path / "corpus.jsonl", DOCUMENTS)
    parquet = write_parquet(tmp_path / "corpus.parquet", DOCUMENTS)

    from_folder = run_prepare(tmp_path / "folder", f"--input={folder}")
    run_prepare(tmp_path / "jsonl", f"--input={jsonl}")
    run_prepare(tmp_path / "parquet", f"--input={parquet}")
    assert "(3 .parquet files)" in from_folder["source"]
    assert len(from_folder["settings"]["source_files"]) == 3
    for split in ("train", "val"):
        expected = read_split(tmp_path / "parquet", split)
        np.testing.assert_array_equal(read_split(tmp_path / "folder", split), expected)
        np.testing.assert_array_equal(read_split(tmp_path / "jsonl", split), expected)


# ---------------------------------------------------------------------------
# Documents and the split rule


def test_documents_end_with_eot_and_round_trip(tmp_path: Path, parquet_corpus: Path, gpt2: GPT2Tokenizer) -> None:
    # 13-token shards cut through most documents.
    meta = run_prepare(tmp_path, f"--input={parquet_corpus}", "--shard_tokens=13", "--val_every=4")
    expected = {
        "train": [text for i, text in enumerate(DOCUMENTS) if i % 4 != 3],
        "val": [text for i, text in enumerate(DOCUMENTS) if i % 4 == 3],
    }

    assert "i % 4 == 3" in meta["split"]
    assert meta["documents"] == {"train": 90, "val": 30}
    for split, texts in expected.items():
        tokens = read_split(tmp_path, split)
        assert tokens[-1] == GPT2_EOT_TOKEN
        assert int((tokens == GPT2_EOT_TOKEN).sum()) == len(texts)
        documents = split_at_eot(tokens)
        assert documents[-1] == []
        assert [gpt2.decode(ids) for ids in documents[:-1]] == texts
        assert [ids for ids in documents[:-1]] == [gpt2.encode(text) for text in texts]


def test_val_input_forms_val_split(tmp_path: Path, gpt2: GPT2Tokenizer) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", DOCUMENTS[:30])
    val = write_parquet(tmp_path / "val.parquet", ["held out one", "held out two"])
    meta = run_prepare(tmp_path / "out", f"--input={train}", f"--val_input={val}", "--shard_tokens=50")

    assert "--val_input documents" in meta["split"]
    assert meta["documents"] == {"train": 30, "val": 2}
    val_tokens = read_split(tmp_path / "out", "val").tolist()
    assert val_tokens == gpt2.encode("held out one") + [GPT2_EOT_TOKEN] + gpt2.encode("held out two") + [GPT2_EOT_TOKEN]


def test_hub_stream_without_validation_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    texts = DOCUMENTS[:40]
    stream = datasets.Dataset.from_dict({"text": texts}).to_iterable_dataset()
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: datasets.IterableDatasetDict({"train": stream}))
    monkeypatch.setattr(corpus, "DOCUMENTS_PER_BATCH", 7)
    meta = prepare.main(["openwebtext", f"--out_dir={tmp_path / 'hub'}", "--num_proc=1", "--val_every=5", "--shard_tokens=64"])
    local = run_prepare(tmp_path / "local", f"--input={write_jsonl(tmp_path / 'c.jsonl', texts)}", "--val_every=5", "--shard_tokens=64")

    assert meta["source"] == "Skylion007/openwebtext"
    assert meta["settings"]["hf_config"] is None
    assert meta["documents"] == {"train": 32, "val": 8}
    for split in ("train", "val"):
        np.testing.assert_array_equal(read_split(tmp_path / "hub", split), read_split(tmp_path / "local", split))
    assert local["train_tokens"] == meta["train_tokens"]


# ---------------------------------------------------------------------------
# Interruption and resume


class Interrupt:
    """Stands in for shards.save_state and raises KeyboardInterrupt like Ctrl-C at a chosen shard.

    `before_save=False` interrupts right after the state records the first complete shard.
    `before_save=True` interrupts when the second shard file is complete but not yet recorded.
    """

    def __init__(self, before_save: bool) -> None:
        self.before_save = before_save
        self.original = shards.save_state

    def __call__(self, out_dir: Path, state: dict) -> None:
        complete = sum(len(record["shards"]) for record in state["splits"].values())
        if self.before_save and complete >= 2:
            raise KeyboardInterrupt
        self.original(out_dir, state)
        if not self.before_save and complete >= 1:
            raise KeyboardInterrupt


@pytest.mark.parametrize("before_save", [False, True], ids=["after_first_shard", "shard_not_recorded"])
def test_interrupted_run_resumes_identically(
    tmp_path: Path, parquet_corpus: Path, small_batches: None, monkeypatch: pytest.MonkeyPatch, capsys, before_save: bool
) -> None:
    args = [f"--input={parquet_corpus}", "--shard_tokens=97"]
    run_prepare(tmp_path / "whole", *args)

    out_dir = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        patch.setattr(shards, "save_state", Interrupt(before_save))
        with pytest.raises(SystemExit) as stopped:
            run_prepare(out_dir, *args)
    assert stopped.value.code == prepare.EXIT_INTERRUPTED
    assert not (out_dir / "meta.json").exists()
    state = json.loads((out_dir / shards.STATE_FILE).read_text())
    assert len(state["splits"]["train"]["shards"]) == 1
    assert state["next_document"]["train+val"] > 0
    assert "rerun the same command to continue" in capsys.readouterr().err

    starts = []
    original_iter = corpus.LocalDocuments.iter_batches

    def record_start(self, start):
        starts.append(start)
        return original_iter(self, start)

    monkeypatch.setattr(corpus.LocalDocuments, "iter_batches", record_start)
    run_prepare(out_dir, *args)
    assert "resuming an unfinished preparation" in capsys.readouterr().out
    assert starts == [state["next_document"]["train+val"]]
    assert output_files(out_dir) == output_files(tmp_path / "whole")


def test_finished_run_is_not_redone(tmp_path: Path, parquet_corpus: Path, capsys) -> None:
    args = [f"--input={parquet_corpus}", "--shard_tokens=97"]
    first = run_prepare(tmp_path, *args)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}

    again = run_prepare(tmp_path, *args)
    assert again == first
    assert "already prepared" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before

    redone = run_prepare(tmp_path, *args, "--overwrite")
    assert redone == first
    assert (tmp_path / "meta.json").stat().st_mtime_ns != before["meta.json"]


def test_resume_with_other_settings_fails(tmp_path: Path, parquet_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(shards, "save_state", Interrupt(before_save=False))
        with pytest.raises(SystemExit):
            run_prepare(tmp_path, f"--input={parquet_corpus}", "--shard_tokens=97")
    before = output_files(tmp_path)

    with pytest.raises(SystemExit) as error:
        run_prepare(tmp_path, f"--input={parquet_corpus}", "--shard_tokens=50")
    message = str(error.value)
    assert message.startswith("error: ")
    assert "unfinished preparation with other settings" in message
    assert "shard_tokens: 97 before, 50 now" in message
    assert "--overwrite" in message
    assert output_files(tmp_path) == before

    meta = run_prepare(tmp_path, f"--input={parquet_corpus}", "--shard_tokens=50", "--overwrite")
    assert meta["settings"]["shard_tokens"] == 50
    assert not (tmp_path / shards.STATE_FILE).exists()
    assert not (tmp_path / "train_000.bin.partial").exists()


def test_finished_run_with_other_settings_fails(tmp_path: Path, parquet_corpus: Path) -> None:
    run_prepare(tmp_path, f"--input={parquet_corpus}", "--shard_tokens=97")
    before = output_files(tmp_path)
    with pytest.raises(SystemExit) as error:
        run_prepare(tmp_path, f"--input={parquet_corpus}", "--val_every=3")
    assert "with other settings" in str(error.value)
    assert "split:" in str(error.value)
    assert output_files(tmp_path) == before


# ---------------------------------------------------------------------------
# Input errors


@pytest.mark.parametrize("value", ["-5", "abc", "1.5M", ""])
def test_bad_shard_tokens(tmp_path: Path, parquet_corpus: Path, value: str) -> None:
    with pytest.raises(SystemExit) as error:
        run_prepare(tmp_path / "out", f"--input={parquet_corpus}", f"--shard_tokens={value}")
    message = str(error.value)
    assert message.startswith("error: argument --shard_tokens: invalid token count")
    assert repr(value) in message
    assert not (tmp_path / "out").exists()


def test_shard_tokens_accepts_suffixes() -> None:
    assert prepare.parse_token_count("100M") == 100_000_000
    assert prepare.parse_token_count("2k") == 2000
    assert prepare.parse_token_count("1_000") == 1000
    assert prepare.parse_token_count("0") == 0


@pytest.mark.parametrize("extra, fragment", [
    (["--val_every=1"], "--val_every must be 2 or more"),
    (["--val_fraction=0.2"], "split documents with --val_every=N"),
    (["--num_proc=0"], "--num_proc must be 1 or more"),
    (["--text_field=body"], "has no column 'body' (columns: text, id)"),
])
def test_streamed_option_mistakes(tmp_path: Path, parquet_corpus: Path, extra: list[str], fragment: str) -> None:
    with pytest.raises(SystemExit) as error:
        run_prepare(tmp_path / "out", f"--input={parquet_corpus}", *extra)
    assert fragment in str(error.value)
    assert not (tmp_path / "out").exists()


def test_input_equals_with_several_files(tmp_path: Path, parquet_corpus: Path) -> None:
    with pytest.raises(SystemExit) as error:
        run_prepare(tmp_path / "out", f"--input={parquet_corpus}", str(parquet_corpus))
    assert "pass several files without '='" in str(error.value)


def test_too_few_documents_for_val(tmp_path: Path) -> None:
    corpus_path = write_jsonl(tmp_path / "three.jsonl", ["one", "two", "three"])
    with pytest.raises(SystemExit, match="corpus too small: .* 0 val tokens; .*smaller --val_every"):
        run_prepare(tmp_path / "out", f"--input={corpus_path}")


def test_null_text_names_row(tmp_path: Path) -> None:
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"text": ["fine", None, "also fine"]}), path)
    with pytest.raises(SystemExit, match="row 1 has no text in column 'text'"):
        run_prepare(tmp_path / "out", f"--input={path}")


def test_invalid_utf8_jsonl_names_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(SystemExit, match="line 2 is not valid UTF-8"):
        run_prepare(tmp_path / "out", f"--input={path}")
