"""The server's OpenAPI document against a committed snapshot: restructuring the server must not
change its API by accident. After a deliberate change, regenerate the snapshot with
`LMLAB_UPDATE_SNAPSHOTS=1 pytest tests/serve/test_openapi_snapshot.py`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.serve.conftest import make_server

SNAPSHOT = Path(__file__).parents[1] / "snapshots" / "openapi.json"


def test_openapi_matches_snapshot(tiny_run: Path) -> None:
    app, _ = make_server(tiny_run, max_batch=2)
    doc = json.dumps(app.openapi(), indent=1, sort_keys=True) + "\n"
    if os.environ.get("LMLAB_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(doc)
    assert json.loads(doc) == json.loads(SNAPSHOT.read_text()), "the OpenAPI document changed"
