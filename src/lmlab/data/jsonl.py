"""Reading JSONL files with errors that name the file and line (corpora, chats, preferences)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def read_jsonl(path: Path, error: type[ValueError]) -> Iterator[tuple[str, Any]]:
    """(`file:line`, parsed value) for every non-blank line of `path`.

    A missing or unreadable file or a line that is not JSON raises `error` with a one-line
    message; checking the shape of each value is the caller's job (it has the `file:line`).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise error(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"cannot read {path}: {e}") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{where}: malformed JSON ({e.msg})") from None
