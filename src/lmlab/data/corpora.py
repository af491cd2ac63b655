"""Corpus sources: named built-ins, text files/folders/globs, JSONL, and local HF datasets.

A corpus is a list of documents split once and for all into train and validation documents, with
a content fingerprint that keys every cache built from it (tokenizers, token shards).

Sources (`--corpus`):
- `python-stdlib`: the `.py` files of the running Python's standard library (tests, site-packages
  and vendored test data excluded), in sorted path order; 2% of files are held out for validation,
  chosen by a hash of their relative path so the split is fixed across machines and versions.
- a `.txt` (or any text) file, a folder (its text files, recursively), or a glob: one document per
  file; a single-file corpus holds out its last `val_fraction` of characters (as nanoGPT does).
- a `.jsonl` file: one document per line, from the `text_field` of each JSON object.
- `hf:NAME[:SPLIT]`: a Hugging Face dataset already present in the local cache (never downloads).
- `world` or `world:OPTIONS`: generated task-world documents (see `lmlab.data.world`).

The corpus record itself (`Corpus`, the split, the fingerprint) is `lmlab.data.corpus`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from pathlib import Path

from lmlab.data import world
from lmlab.data.corpus import Corpus, CorpusError, python_stdlib, read_text, split_docs
from lmlab.data.jsonl import read_jsonl

TEXT_SUFFIXES = {
    ".txt",
    ".md",
    ".rst",
    ".py",
    ".tex",
    ".html",
    ".c",
    ".h",
    ".cpp",
    ".js",
    ".ts",
    ".rs",
    ".go",
    ".java",
    ".sh",
    ".toml",
    ".yaml",
    ".yml",
    ".csv",
}


def _jsonl(path: Path, text_field: str) -> list[str]:
    docs = []
    for where, row in read_jsonl(path, CorpusError):
        if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
            raise CorpusError(f"{where}: no string field {text_field!r}")
        docs.append(row[text_field])
    return docs


def _hf_dataset(spec: str, text_field: str) -> list[str]:
    name, _, split = spec.removeprefix("hf:").partition(":")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local cache only, never the network
    try:
        import datasets
    except ImportError:
        raise CorpusError(
            "corpus hf:... needs the `datasets` package (pip install datasets)"
        ) from None
    try:
        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as e:  # datasets raises many types; all mean "not available locally"
        raise CorpusError(f"dataset {name!r} is not available locally: {e}") from None
    if text_field not in ds.column_names:
        raise CorpusError(f"dataset {name!r} has no column {text_field!r}")
    return list(ds[text_field])


def _files(spec: str) -> list[Path]:
    if any(c in spec for c in "*?["):
        return sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    path = Path(spec)
    if path.is_dir():
        return sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix in TEXT_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    if path.is_file():
        return [path]
    raise CorpusError(
        f"corpus {spec!r} is not a known source ({', '.join(SOURCES)}) nor an existing path"
    )


SOURCES: dict[str, Callable[[float], Corpus]] = {
    "python-stdlib": python_stdlib,
    "world": world.world_corpus,
}


def load_corpus(spec: str, val_fraction: float = 0.02, text_field: str = "text") -> Corpus:
    """Load the corpus named or pointed to by `spec` (see the module docstring)."""
    if not 0 < val_fraction < 1:
        raise CorpusError(f"val fraction must be in (0, 1), got {val_fraction}")
    if spec in SOURCES:
        return SOURCES[spec](val_fraction)
    if spec.startswith("world:"):
        return world.world_source(spec.removeprefix("world:"))(val_fraction)
    if spec.startswith("hf:"):
        docs = _hf_dataset(spec, text_field)
        return split_docs(spec, [str(i) for i in range(len(docs))], docs, val_fraction)
    files = _files(spec)
    if not files:
        raise CorpusError(f"corpus {spec!r} matches no text files")
    if len(files) == 1 and files[0].suffix == ".jsonl":
        docs = _jsonl(files[0], text_field)
        return split_docs(spec, [str(i) for i in range(len(docs))], docs, val_fraction)
    docs = [read_text(p) for p in files]
    return split_docs(spec, [p.as_posix() for p in files], docs, val_fraction)
