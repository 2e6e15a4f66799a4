"""Timelines: which kernel ran on which stream when, simulated or measured, and their files.

A `Timeline` is a table of `KernelSpan`s (node, kernel, stream, start_us, end_us, source) plus
a `RunMeta` saying what ran where (device, graph, policy, streams, launch mode). Both the
simulator and a GPU run produce one, so every metric, chart and trace works on either.

Files: `.parquet` (pyarrow; the schema id and the meta as JSON in the file's key-value
metadata) or `.json` (`{"schema": "lace-timeline/1", "meta": {...}, "spans": [...]}`).
Loading checks the schema id, columns and values, and names the file and the problem.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from concurrency.errors import LaceError

if TYPE_CHECKING:
    import pandas as pd

SCHEMA = "lace-timeline/1"
SOURCES = ("simulated", "measured")
LAUNCH_MODES = ("graph", "eager")
COLUMNS = ("node", "kernel", "stream", "start_us", "end_us", "source")
_META_KEY = b"lace.timeline.meta"
_SCHEMA_KEY = b"lace.timeline.schema"


class TimelineError(LaceError):
    """A timeline value or file that LACE cannot use."""


@dataclass(frozen=True)
class KernelSpan:
    """One kernel execution: graph node `node` ran `kernel` on `stream` over [start, end) µs."""

    node: str
    kernel: str
    stream: int
    start_us: float
    end_us: float
    source: str = "simulated"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise TimelineError(
                f"span {self.node!r}: source must be one of {', '.join(SOURCES)}, "
                f"got {self.source!r}"
            )
        try:  # accept NumPy integers and floats (spans built from a DataFrame), store plain ones
            object.__setattr__(self, "stream", operator.index(self.stream))
            object.__setattr__(self, "start_us", float(self.start_us))
            object.__setattr__(self, "end_us", float(self.end_us))
        except (TypeError, ValueError):
            raise TimelineError(
                f"span {self.node!r}: stream must be an integer and start/end numbers"
            ) from None
        if self.stream < 0:
            raise TimelineError(f"span {self.node!r}: stream must be an integer ≥ 0")
        if not self.end_us >= self.start_us:
            raise TimelineError(
                f"span {self.node!r} ends before it starts ({self.start_us} > {self.end_us} µs)"
            )

    @property
    def duration_us(self) -> float:
        return self.end_us - self.start_us


@dataclass(frozen=True)
class RunMeta:
    """What a timeline records: the device, the graph, the plan policy and how it launched."""

    device: str
    model: str = ""
    layer: str = ""
    mode: str = ""
    batch: int = 0
    tokens: int = 0
    policy: str = ""
    streams: int = 1
    launch: str = "graph"
    source: str = "simulated"
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("device", "model", "layer", "mode", "policy"):
            if not isinstance(getattr(self, name), str):
                raise TimelineError(f"meta {name!r} must be text, got {getattr(self, name)!r}")
        for name in ("batch", "tokens", "streams"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TimelineError(f"meta {name!r} must be a whole number ≥ 0, got {value!r}")
        if self.launch not in LAUNCH_MODES:
            raise TimelineError(
                f"launch must be one of {', '.join(LAUNCH_MODES)}, got {self.launch!r}"
            )
        if self.source not in SOURCES:
            raise TimelineError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        object.__setattr__(self, "notes", tuple(self.notes))

    def to_dict(self) -> dict[str, object]:
        d = dataclasses.asdict(self)
        d["notes"] = list(self.notes)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> RunMeta:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise TimelineError(f"unknown meta keys {unknown}")
        return cls(**data)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Timeline:
    """Kernel spans (sorted by start, stream, end, node) and the run they came from."""

    spans: tuple[KernelSpan, ...]
    meta: RunMeta

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "spans",
            tuple(sorted(self.spans, key=lambda s: (s.start_us, s.stream, s.end_us, s.node))),
        )

    def __len__(self) -> int:
        return len(self.spans)

    def span(self, node: str) -> KernelSpan | None:
        """The span of graph node `node`, or None when it launched nothing."""
        return self.by_node.get(node)

    @cached_property
    def by_node(self) -> Mapping[str, KernelSpan]:
        """Node name → its span (built once)."""
        return MappingProxyType({s.node: s for s in self.spans})

    @property
    def streams(self) -> tuple[int, ...]:
        return tuple(sorted({s.stream for s in self.spans}))

    def to_frame(self) -> pd.DataFrame:
        """One row per span: the COLUMNS plus duration_us."""
        import pandas as pd

        frame = pd.DataFrame(
            [dataclasses.astuple(s) for s in self.spans], columns=list(COLUMNS)
        ).astype({"node": str, "kernel": str, "stream": "int64", "source": str})
        frame = frame.astype({"start_us": "float64", "end_us": "float64"})
        frame["duration_us"] = frame["end_us"] - frame["start_us"]
        return frame

    def save(self, path: str | Path) -> Path:
        """Write `.parquet` or `.json` (chosen by the suffix); return the path."""
        path = Path(path)
        suffix = _suffix(path)
        if suffix == ".json":
            doc = {
                "schema": SCHEMA,
                "meta": self.meta.to_dict(),
                "spans": [dataclasses.asdict(s) for s in self.spans],
            }
            path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
            return path
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(self.to_frame()[list(COLUMNS)], preserve_index=False)
        metadata = dict(table.schema.metadata or {})
        metadata[_SCHEMA_KEY] = SCHEMA.encode()
        metadata[_META_KEY] = json.dumps(self.meta.to_dict()).encode()
        pq.write_table(table.replace_schema_metadata(metadata), path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Timeline:
        """Read a file `save` wrote; a corrupt or foreign file raises TimelineError naming it."""
        path = Path(path)
        suffix = _suffix(path)
        if not path.is_file():
            raise TimelineError(f"timeline file {path} not found; check the path")
        try:
            if suffix == ".json":
                return _load_json(path)
            return _load_parquet(path)
        except TimelineError as exc:
            raise TimelineError(f"{path}: {exc}") from None


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".json", ".parquet"):
        raise TimelineError(
            f"timeline file {path} must end in .parquet or .json, got {suffix or 'no suffix'!r}"
        )
    return suffix


def _check_schema(found: object) -> None:
    if found is None:
        raise TimelineError(
            f"not a LACE timeline (no {SCHEMA!r} schema id); write it with Timeline.save"
        )
    if found != SCHEMA:
        raise TimelineError(
            f"schema {found!r} is not {SCHEMA!r}; re-save it with this version of LACE"
        )


def _load_json(path: Path) -> Timeline:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TimelineError(f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise TimelineError("not a LACE timeline (the JSON is not an object)")
    _check_schema(doc.get("schema"))
    if not isinstance(doc.get("meta"), dict) or not isinstance(doc.get("spans"), list):
        raise TimelineError("needs a 'meta' object and a 'spans' list")
    rows = doc["spans"]
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or set(row) != set(COLUMNS):
            raise TimelineError(f"span {i} must have exactly the keys {', '.join(COLUMNS)}")
    return _build(doc["meta"], rows)


def _load_parquet(path: Path) -> Timeline:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise TimelineError(f"not a readable parquet file ({exc})") from None
    metadata = table.schema.metadata or {}
    schema = metadata.get(_SCHEMA_KEY)
    _check_schema(schema.decode(errors="replace") if schema is not None else None)
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise TimelineError(f"missing columns {missing}")
    try:
        meta = json.loads(metadata.get(_META_KEY, b"").decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TimelineError("its run metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise TimelineError("its run metadata is not a JSON object")
    return _build(meta, table.select(list(COLUMNS)).to_pylist())


def _build(meta: dict[str, object], rows: list[dict[str, object]]) -> Timeline:
    try:
        spans = tuple(
            KernelSpan(
                node=_typed(r, "node", str),
                kernel=_typed(r, "kernel", str),
                stream=_typed(r, "stream", int),
                start_us=float(_typed(r, "start_us", (int, float))),
                end_us=float(_typed(r, "end_us", (int, float))),
                source=_typed(r, "source", str),
            )
            for r in rows
        )
        return Timeline(spans, RunMeta.from_dict(meta))
    except TypeError as exc:
        raise TimelineError(f"bad run metadata ({exc})") from None


def _typed(row: dict[str, object], key: str, kind: type | tuple[type, ...]):  # type: ignore[no-untyped-def]
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TimelineError(f"column {key!r} has a bad value {value!r}")
    return value
