"""The data manifest: the shipped one loads; entries carry every recording field with its type;
a timeline must agree with its entry and a table have its kind's columns; bad manifests name
the problem; writing merges by file."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from concurrency.data import (
    FIELDS,
    RACE,
    RACE_COLUMNS,
    REPLAY_COLUMNS,
    REPLAYS,
    SCHEMA,
    TIMELINE,
    DataEntry,
    default_folder,
    load_manifest,
    load_table,
    write_manifest,
)
from concurrency.errors import LaceError
from concurrency.timing.timeline import KernelSpan, RunMeta, Timeline

DATA = Path(__file__).resolve().parents[1] / "data"


def test_shipped_manifest_loads() -> None:
    assert default_folder() == DATA
    assert isinstance(load_manifest(DATA), tuple)


def _entry(**changes: object) -> DataEntry:
    fields: dict[str, object] = dict.fromkeys(FIELDS, "x")
    fields |= {"layers": 0, "batch": 1, "tokens": 1, "streams": 2, "config": {"weights": "bf16"}}
    fields |= {"kind": TIMELINE, "source": "measured", "model": "tiny", "layer": "gdn"}
    fields |= {"mode": "decode", "policy": "happens_before", "device": "GPU X"}
    fields |= changes
    return DataEntry(**fields)  # type: ignore[arg-type]


def _timeline(folder: Path, name: str, **meta: object) -> str:
    run = {"device": "GPU X", "model": "tiny", "layer": "gdn", "mode": "decode", "batch": 1}
    run |= {"tokens": 1, "policy": "happens_before", "streams": 2, "source": "measured"} | meta
    spans = (KernelSpan("a", "k", 0, 0.0, 1.0, "measured"),)
    Timeline(spans, RunMeta(**run)).save(folder / name)  # type: ignore[arg-type]
    return name


def test_written_entries_load_back_and_merge_by_file(tmp_path: Path) -> None:
    one = _entry(file=_timeline(tmp_path, "a.parquet"))
    write_manifest(tmp_path, [one])
    assert load_manifest(tmp_path) == (one,)
    doc = json.loads((tmp_path / "manifest.json").read_text())
    assert doc["schema"] == SCHEMA and set(doc["entries"][0]) == set(FIELDS)
    again = _entry(file="a.parquet", command="lace record --again")
    two = _entry(file=_timeline(tmp_path, "b.json", batch=4), batch=4)
    write_manifest(tmp_path, [again, two])
    assert load_manifest(tmp_path) == (again, two)  # replaced by file, sorted by file


def test_a_timeline_must_agree_with_its_entry(tmp_path: Path) -> None:
    write_manifest(tmp_path, [_entry(file=_timeline(tmp_path, "t.parquet", streams=1))])
    with pytest.raises(LaceError, match=r"t\.parquet says streams = 1, the entry 2"):
        load_manifest(tmp_path)
    write_manifest(tmp_path, [_entry(file=_timeline(tmp_path, "t.parquet", device="GPU Y"))])
    with pytest.raises(LaceError, match="recorded on 'GPU Y'"):
        load_manifest(tmp_path)
    assert load_manifest(tmp_path, check_files=False)  # the fields alone are fine


def test_tables_need_their_kind_s_columns(tmp_path: Path) -> None:
    rows = [dict.fromkeys(REPLAY_COLUMNS, 1) | {"model": "m", "status": "ok"}]
    pd.DataFrame(rows).to_parquet(tmp_path / "r.parquet")
    pd.DataFrame([{"model": "m"}]).to_parquet(tmp_path / "bad.parquet")
    entries = [
        _entry(file="r.parquet", kind=REPLAYS, device="GPU Z", date="2026-12-01"),
        _entry(file="bad.parquet", kind=RACE),
    ]
    write_manifest(tmp_path, entries[:1])
    frame = load_table(tmp_path, REPLAYS)
    assert len(frame) == 1 and frame["device"].item() == "GPU Z"
    assert frame["date"].item() == "2026-12-01" and frame["file"].item() == "r.parquet"
    assert load_table(tmp_path, RACE).empty and set(RACE_COLUMNS) <= set(load_table(tmp_path, RACE))
    write_manifest(tmp_path, entries)
    with pytest.raises(LaceError, match=r"not a LACE race table: it lacks the columns \['config'"):
        load_manifest(tmp_path)
    with pytest.raises(LaceError, match="kind must be one of"):
        load_table(tmp_path, TIMELINE)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"batch": "1"}, "'batch' must be a whole number"),
        ({"batch": True}, "'batch' must be a whole number"),
        ({"device": 3}, "'device' must be text"),
        ({"config": "bf16"}, "'config' must be a JSON object"),
        ({"kind": "movie"}, "kind must be one of timeline, replays, race"),
        ({"source": "guessed"}, "source must be one of measured, simulated"),
        ({"colour": "red"}, r"unknown fields \['colour'\]"),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, change: dict, message: str) -> None:
    raw = _entry(file="x.parquet").to_dict() | change
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": SCHEMA, "entries": [raw]}))
    with pytest.raises(LaceError, match=message):
        load_manifest(tmp_path, check_files=False)


def test_missing_file_and_foreign_manifest_are_named(tmp_path: Path) -> None:
    raw = _entry(file="gone.json").to_dict()
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": SCHEMA, "entries": [raw]}))
    with pytest.raises(LaceError, match=r"gone\.json"):
        load_manifest(tmp_path)
    raw.pop("nvmath")
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": SCHEMA, "entries": [raw]}))
    with pytest.raises(LaceError, match=r"lacks \['nvmath'\]"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": "lace-data-manifest/1"}))
    with pytest.raises(LaceError, match="not a LACE data manifest"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(LaceError, match="not valid JSON"):
        load_manifest(tmp_path)
    with pytest.raises(LaceError, match="no data manifest"):
        load_manifest(tmp_path / "absent")
