"""Timelines: the value, its table, and its files (round trips, corrupt and foreign files)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from concurrency.errors import LaceError
from concurrency.timing.timeline import SCHEMA, KernelSpan, RunMeta, Timeline, TimelineError


def small_timeline(source: str = "measured") -> Timeline:
    spans = (
        KernelSpan("b-0", "silu", 1, 3.0, 5.5, source),
        KernelSpan("a-0", "mul_mat", 0, 0.0, 4.0, source),
        KernelSpan("c-0", "add", 0, 6.0, 6.25, source),
    )
    meta = RunMeta(
        device="h200",
        model="tiny",
        layer="gdn",
        mode="decode",
        batch=2,
        tokens=1,
        policy="happens_before",
        streams=2,
        launch="eager",
        source=source,
        notes=("recorded with CUPTI", "clock locked"),
    )
    return Timeline(spans, meta)


def test_spans_are_kept_in_start_order_and_indexed_by_node() -> None:
    t = small_timeline()
    assert [s.node for s in t.spans] == ["a-0", "b-0", "c-0"]
    assert t.span("b-0") == KernelSpan("b-0", "silu", 1, 3.0, 5.5, "measured")
    assert t.span("missing") is None
    assert t.streams == (0, 1) and len(t) == 3


def test_to_frame_has_one_row_per_span_with_durations() -> None:
    frame = small_timeline().to_frame()
    assert list(frame.columns) == [
        "node",
        "kernel",
        "stream",
        "start_us",
        "end_us",
        "source",
        "duration_us",
    ]
    assert frame["duration_us"].tolist() == [4.0, 2.5, 0.25]
    assert frame["stream"].dtype == "int64"


@pytest.mark.parametrize("suffix", [".parquet", ".json"])
def test_round_trip_keeps_spans_and_meta(tmp_path: Path, suffix: str) -> None:
    t = small_timeline()
    path = t.save(tmp_path / f"run{suffix}")
    assert Timeline.load(path) == t


def test_json_file_names_its_schema(tmp_path: Path) -> None:
    doc = json.loads(small_timeline().save(tmp_path / "t.json").read_text())
    assert doc["schema"] == SCHEMA == "lace-timeline/1"
    assert doc["meta"]["notes"] == ["recorded with CUPTI", "clock locked"]


def test_empty_timeline_round_trips(tmp_path: Path) -> None:
    t = Timeline((), RunMeta(device="h100"))
    for suffix in (".json", ".parquet"):
        assert Timeline.load(t.save(tmp_path / f"e{suffix}")) == t


@pytest.mark.parametrize(
    ("span", "message"),
    [
        (dict(stream=-1), "stream"),
        (dict(start_us=5.0, end_us=4.0), "ends before it starts"),
        (dict(source="guessed"), "source"),
    ],
)
def test_bad_spans_are_rejected(span: dict[str, object], message: str) -> None:
    fields: dict[str, object] = dict(
        node="n", kernel="k", stream=0, start_us=0.0, end_us=1.0, source="simulated"
    )
    fields.update(span)
    with pytest.raises(TimelineError, match=message):
        KernelSpan(**fields)  # type: ignore[arg-type]


def test_bad_meta_is_rejected() -> None:
    with pytest.raises(TimelineError, match="launch"):
        RunMeta(device="h100", launch="lazy")


def _error(path: Path) -> str:
    with pytest.raises(LaceError) as info:
        Timeline.load(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file_and_wrong_suffix(tmp_path: Path) -> None:
    assert "not found" in _error(tmp_path / "absent.json")
    (tmp_path / "t.csv").write_text("node,kernel\n")
    assert ".parquet or .json" in _error(tmp_path / "t.csv")


def test_corrupt_files_name_the_file_and_problem(tmp_path: Path) -> None:
    bad_parquet = tmp_path / "bad.parquet"
    bad_parquet.write_bytes(b"PAR1 but not really")
    message = _error(bad_parquet)
    assert str(bad_parquet) in message and "parquet" in message

    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    message = _error(bad_json)
    assert str(bad_json) in message and "not valid JSON" in message


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    foreign_parquet = tmp_path / "other.parquet"
    pd.DataFrame({"node": ["a"], "ts": [1.0]}).to_parquet(foreign_parquet)
    assert "not a LACE timeline" in _error(foreign_parquet)

    foreign_json = tmp_path / "trace.json"
    foreign_json.write_text(json.dumps({"traceEvents": []}))
    assert "not a LACE timeline" in _error(foreign_json)


def test_other_schema_versions_and_broken_rows_are_refused(tmp_path: Path) -> None:
    path = small_timeline().save(tmp_path / "t.json")
    doc = json.loads(path.read_text())

    future = {**doc, "schema": "lace-timeline/2"}
    path.write_text(json.dumps(future))
    assert "lace-timeline/2" in _error(path)

    missing_key = {**doc, "spans": [{"node": "a"}]}
    path.write_text(json.dumps(missing_key))
    assert "span 0" in _error(path)

    bad_value = {**doc, "spans": [{**doc["spans"][0], "start_us": "soon"}]}
    path.write_text(json.dumps(bad_value))
    assert "start_us" in _error(path)

    bad_meta = {**doc, "meta": {**doc["meta"], "colour": "red"}}
    path.write_text(json.dumps(bad_meta))
    assert "colour" in _error(path)

    bad_batch = {**doc, "meta": {**doc["meta"], "batch": "two"}}
    path.write_text(json.dumps(bad_batch))
    assert "batch" in _error(path)


def test_parquet_without_required_columns_is_refused(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = small_timeline().save(tmp_path / "t.parquet")
    table = pq.read_table(path)
    damaged = table.drop_columns(["end_us"]).replace_schema_metadata(table.schema.metadata)
    assert isinstance(damaged, pa.Table)
    pq.write_table(damaged, path)
    assert "end_us" in _error(path)


def test_stream_overlaps_name_consecutive_kernels_of_one_stream_that_overlap() -> None:
    """A stream runs its kernels one after another: a measured overlap is named, largest
    first; kernels of different streams may overlap freely; the slack absorbs timer skew."""
    from concurrency.timing.metrics import stream_overlaps
    from concurrency.timing.timeline import KernelSpan, RunMeta, Timeline

    def span(node: str, stream: int, start: float, end: float) -> KernelSpan:
        return KernelSpan(node, "k", stream, start, end, "measured")

    meta = RunMeta(device="d", model="m", layer="gdn", mode="decode", batch=1, policy="p",
                   streams=2, launch="graph", source="measured")  # fmt: skip
    t = Timeline(
        (
            span("a", 0, 0.0, 2.0),
            span("b", 0, 1.7, 3.0),  # 0.3 µs early
            span("c", 0, 2.99, 4.0),  # 0.01 µs: within a 0.02 slack
            span("x", 1, 0.5, 3.5),  # another stream: fine
            span("d", 1, 3.45, 5.0),  # 0.05 µs early
        ),
        meta,
    )
    found = stream_overlaps(t, slack_us=0.02)
    assert [(o.first_node, o.second_node) for o in found] == [("a", "b"), ("x", "d")]
    assert abs(found[0].overlap_us - 0.3) < 1e-9 and found[0].stream == 0
    assert len(stream_overlaps(t)) == 3 and stream_overlaps(t, slack_us=1.0) == []


def test_the_recorded_timelines_keep_stream_order_up_to_cuptis_stamp_slack() -> None:
    """The committed H200 timelines: a kernel's end passes the next same-stream kernel's start
    by at most CUPTI_ORDER_SLACK_US (CUPTI's stamps, see the constant), twice in this
    recording, by the 0.10 and 0.06 µs data/README.md names (each after a cuBLASLt kernel);
    a larger overlap would mean a wrong timeline."""
    from concurrency.data import TIMELINE, default_folder, load_manifest
    from concurrency.timing.metrics import CUPTI_ORDER_SLACK_US, stream_overlaps
    from concurrency.timing.timeline import Timeline

    folder = default_folder()
    timelines = [e for e in load_manifest(folder, check_files=False) if e.kind == TIMELINE]
    assert timelines
    for entry in timelines:
        worst = stream_overlaps(Timeline.load(folder / entry.file), slack_us=CUPTI_ORDER_SLACK_US)
        assert not worst, (entry.file, worst[0])
    found = sorted(
        (
            (round(o.overlap_us, 2), o.first_node, o.second_node, e.file.rsplit("/", 1)[-1])
            for e in timelines
            for o in stream_overlaps(Timeline.load(folder / e.file), slack_us=0.01)
        ),
        reverse=True,
    )
    assert [f[:3] for f in found] == [
        (0.1, "Kcur_proj-3", "Kcur_normed_rms-3"),
        (0.06, "Qcur_full-3", "Qcur_normed_rms-3"),
    ]
    assert "27b-stack4-b8" in found[0][3] and "27b-stack4-b64" in found[1][3]
