"""A corpus: documents split once and for all into train and validation ones, with a content
fingerprint that keys every cache built from it (tokenizers, token shards); and the built-in
`python-stdlib` corpus. Where corpora come from is `lmlab.data.corpora`'s job.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path


class CorpusError(ValueError):
    """A corpus that cannot be read or is empty (shown to the user as one line)."""


@dataclass
class Corpus:
    name: str
    train: list[str]
    val: list[str]

    @property
    def fingerprint(self) -> str:
        """sha256 over the split documents: equal fingerprints mean equal token streams."""
        h = hashlib.sha256()
        for part in (self.train, self.val):
            h.update(b"\x00split")
            for doc in part:
                h.update(hashlib.sha256(doc.encode()).digest())
        return h.hexdigest()

    @property
    def n_chars(self) -> int:
        return sum(map(len, self.train)) + sum(map(len, self.val))


def _hash_fraction(key: str) -> float:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 16**8


def split_docs(name: str, keys: list[str], docs: list[str], val_fraction: float) -> Corpus:
    """Hold out the documents whose key hashes below `val_fraction` (at least one)."""
    docs_keys = [(k, d) for k, d in zip(keys, docs, strict=True) if d]
    if not docs_keys:
        raise CorpusError(f"corpus {name!r} is empty")
    if len(docs_keys) == 1:
        text = docs_keys[0][1]
        cut = int(len(text) * (1 - val_fraction))
        return Corpus(name, [text[:cut]], [text[cut:]])
    val_idx = {i for i, (k, _) in enumerate(docs_keys) if _hash_fraction(k) < val_fraction}
    if not val_idx:
        val_idx = {min(range(len(docs_keys)), key=lambda i: _hash_fraction(docs_keys[i][0]))}
    train = [d for i, (_, d) in enumerate(docs_keys) if i not in val_idx]
    val = [d for i, (_, d) in enumerate(docs_keys) if i in val_idx]
    return Corpus(name, train, val)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CorpusError(f"{path} is not UTF-8 text") from None
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e.strerror}") from None


def python_stdlib(val_fraction: float = 0.02) -> Corpus:
    """The installed Python standard library's source files (fixed 2% split: `val_fraction`
    is ignored so that every run on this corpus evaluates on the same held-out files)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
    paths = sorted(
        p for p in root.rglob("*.py") if not skip.intersection(p.relative_to(root).parts)
    )
    keys = [p.relative_to(root).as_posix() for p in paths]
    docs = []
    for p in paths:
        try:
            docs.append(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            docs.append("")  # a handful of stdlib files are deliberately undecodable
    return split_docs("python-stdlib", keys, docs, 0.02)
