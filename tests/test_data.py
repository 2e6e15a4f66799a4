"""The data manifest: the shipped one loads; bad ones name the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from concurrency.data import load_manifest
from concurrency.errors import LaceError

DATA = Path(__file__).resolve().parents[1] / "data"


def test_shipped_manifest_loads() -> None:
    assert isinstance(load_manifest(DATA), tuple)


def test_missing_file_and_foreign_manifest_are_named(tmp_path: Path) -> None:
    entry = dict.fromkeys(
        ("device", "driver", "cuda", "cupy", "model", "layer", "mode", "policy", "date", "command"),
        "x",
    )
    entry |= {"file": "gone.json", "batch": 1, "tokens": 1, "streams": 1}
    (tmp_path / "manifest.json").write_text(
        json.dumps({"schema": "lace-data-manifest/1", "entries": [entry]})
    )
    with pytest.raises(LaceError, match=r"gone\.json"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(LaceError, match="not a LACE data manifest"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(LaceError, match="not valid JSON"):
        load_manifest(tmp_path)
