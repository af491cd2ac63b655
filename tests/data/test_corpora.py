"""Tests for lmlab.data.corpora."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmlab.data.corpora import load_corpus
from lmlab.data.corpus import CorpusError


def test_single_text_file_holds_out_its_tail(corpus_file: Path) -> None:
    c = load_corpus(str(corpus_file), val_fraction=0.1)
    text = corpus_file.read_text()
    assert c.train[0] + c.val[0] == text
    assert len(c.val[0]) == len(text) - int(len(text) * 0.9)


def test_folder_and_glob_are_deterministic(tmp_path: Path) -> None:
    for i in range(30):
        (tmp_path / f"doc{i:02d}.txt").write_text(f"document {i}\n" * 5)
    (tmp_path / "image.bin").write_bytes(b"\x00\xff")
    a = load_corpus(str(tmp_path), val_fraction=0.2)
    b = load_corpus(str(tmp_path / "*.txt"), val_fraction=0.2)
    assert len(a.train) + len(a.val) == 30
    assert a.val and a.fingerprint == b.fingerprint
    assert not set(a.train) & set(a.val)


def test_jsonl(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a"}\n\n{"text": "b"}\n{"text": "c"}\n')
    c = load_corpus(str(p), val_fraction=0.3)
    assert sorted(c.train + c.val) == ["a", "b", "c"]
    p.write_text('{"text": "a"}\n{"text": oops}\n')
    with pytest.raises(CorpusError, match=r"d\.jsonl:2: malformed JSON"):
        load_corpus(str(p))
    p.write_text('{"body": "a"}\n')
    with pytest.raises(CorpusError, match=r"d\.jsonl:1: no string field 'text'"):
        load_corpus(str(p))


def test_bad_corpora(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="not a known source"):
        load_corpus(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(CorpusError, match="empty"):
        load_corpus(str(tmp_path / "empty.txt"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(CorpusError, match="not UTF-8"):
        load_corpus(str(tmp_path / "latin1.txt"))
    with pytest.raises(CorpusError, match="matches no"):
        load_corpus(str(tmp_path / "*.md"))


def test_python_stdlib_split_is_fixed() -> None:
    a = load_corpus("python-stdlib", val_fraction=0.3)
    b = load_corpus("python-stdlib")
    assert a.fingerprint == b.fingerprint  # the held-out files do not depend on val_fraction
    assert len(a.train) > 500 and 5 <= len(a.val) < 0.05 * len(a.train)
