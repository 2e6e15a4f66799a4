"""A sweep's results file: Parquet, one row per case, written atomically as cases finish.

The file holds the columns of `COLUMNS` (case fields, status and error, the data manifest's
fields that apply, the figures, and the volatile columns that differ between two runs of the
same case), with the schema id `lace-sweep/1` in its key-value metadata like a timeline file.
Loading checks the id, the columns and their types, and names the file and the problem, so a
corrupt or foreign file is one clear error and never silently overwritten.

`ResultFile` is how a sweep writes: it starts from the rows already in the file, adds rows as
they come, and rewrites the whole file (a temporary file, then an atomic rename) at most every
`checkpoint_s` seconds and at the end, so a sweep that is killed keeps what had finished by
its last checkpoint and a reader never sees half a file. A new row replaces an old row with
the same id (a retried failure), and rows of cases outside the current grid are kept: one
file can collect several sweeps.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from concurrency.errors import LaceError
from concurrency.sweep.work import ERROR, OK

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

SCHEMA = "lace-sweep/1"
_SCHEMA_KEY = b"lace.sweep.schema"
_NOTE_KEY = b"lace.sweep.note"

#: Every column with its Arrow type, in file order.
COLUMNS: tuple[tuple[str, str], ...] = (
    # the case
    ("id", "string"),
    ("status", "string"),
    ("error", "string"),
    ("model", "string"),
    ("layer", "string"),
    ("layers", "int64"),
    ("mode", "string"),
    ("batch", "int64"),
    ("tokens", "int64"),
    ("policy", "string"),
    ("gpu", "string"),
    ("max_streams", "int64"),
    ("flow", "string"),
    ("detector", "string"),
    ("n_ctx", "int64"),
    ("n_ubatch", "int64"),
    ("alignment", "int64"),
    ("launch", "string"),
    ("weight_bytes_per_param", "float64"),
    # the data manifest's fields that apply (data/README.md), and the LACE version
    ("device", "string"),
    ("source", "string"),
    ("streams", "int64"),
    ("date", "string"),
    ("command", "string"),
    ("lace_version", "string"),
    # the graph
    ("graph", "string"),
    ("nodes", "int64"),
    ("fork_regions", "int64"),
    # memory: the policy's plan, checked
    ("plan_source", "string"),
    ("planned_graph", "string"),
    ("arena_bytes", "int64"),
    ("lower_bound_bytes", "int64"),
    ("efficiency", "float64"),
    ("buffer_bytes", "int64"),
    ("hazards", "int64"),
    ("races", "int64"),
    ("uses_after_reuse", "int64"),
    ("hazards_by_site", "string"),
    # timing: simulated on the GPU spec, the schedule's streams against one
    ("serial_us", "float64"),
    ("parallel_us", "float64"),
    ("critical_path_us", "float64"),
    ("work_bound_us", "float64"),
    ("speedup", "float64"),
    ("overlap_ratio", "float64"),
    ("concurrency_us", "float64"),
    ("closeness", "float64"),
    # volatile: where and how long (differ between two runs of the same case)
    ("context_ms", "float64"),
    ("planning_ms", "float64"),
    ("simulation_ms", "float64"),
    ("worker", "string"),
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)
#: Columns that may differ between two runs of the same case (timings, the worker, the day).
VOLATILE_COLUMNS = ("date", "context_ms", "planning_ms", "simulation_ms", "worker")
#: The data manifest's fields (concurrency.data.FIELDS) that a simulated sweep row has no
#: value for: it is a row, not a file (nor a kind of file), ran on no GPU driver, CUDA, CuPy or
#: nvmath-python, and its config is spread over its own columns.
MANIFEST_FIELDS_NOT_APPLICABLE = ("file", "kind", "driver", "cuda", "cupy", "nvmath", "config")


class SweepFileError(LaceError):
    """A results file that is not a LACE sweep file of this schema."""


def arrow_schema() -> pa.Schema:
    import pyarrow as pa

    fields = [pa.field(name, pa.type_for_alias(kind)) for name, kind in COLUMNS]
    return pa.schema(fields, metadata={_SCHEMA_KEY: SCHEMA.encode()})


def rows_to_table(rows: Iterable[dict[str, object]]) -> pa.Table:
    """Rows (any subset of the columns each) as a table of exactly `COLUMNS`."""
    import pyarrow as pa

    rows = list(rows)
    unknown = sorted({key for row in rows for key in row} - set(COLUMN_NAMES))
    if unknown:
        raise LaceError(f"sweep rows have columns the schema lacks: {unknown}")
    full = [{name: row.get(name) for name in COLUMN_NAMES} for row in rows]
    return pa.Table.from_pylist(full, schema=arrow_schema())


def read_table(path: str | Path) -> pa.Table:
    """The table in a sweep results file, checked; SweepFileError names the file and what is
    wrong with it (missing, unreadable, foreign, another schema version, bad columns)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "not found"
        raise SweepFileError(f"sweep results file {path} {what}; check the path")
    fix = "move it away or choose another --out"
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        reason = " ".join(str(exc).split())
        raise SweepFileError(f"{path} is not a readable Parquet file ({reason}); {fix}") from None
    found = (table.schema.metadata or {}).get(_SCHEMA_KEY)
    if found is None:
        raise SweepFileError(
            f"{path} is not a LACE sweep results file (no {SCHEMA!r} schema id); {fix}"
        )
    version = found.decode(errors="replace")
    if version != SCHEMA:
        raise SweepFileError(
            f"{path} holds sweep results of schema {version!r}, not {SCHEMA!r}; re-run the "
            f"sweep into a new file ({fix})"
        )
    expected = arrow_schema()
    missing = [name for name in COLUMN_NAMES if name not in table.column_names]
    if missing:
        raise SweepFileError(f"{path} lacks the columns {missing}; {fix}")
    for f in expected:
        kind = table.schema.field(f.name).type
        if kind != f.type and not (kind == pa.null() and len(table) == 0):
            raise SweepFileError(f"{path}: column {f.name!r} is {kind}, expected {f.type}; {fix}")
    table = table.select(list(COLUMN_NAMES)).cast(expected)
    ids = table.column("id")
    if ids.null_count or len(pc.unique(ids)) != len(ids):
        raise SweepFileError(f"{path}: the id column has empty or repeated ids; {fix}")
    statuses = set(table.column("status").to_pylist())
    if not statuses <= {OK, ERROR}:
        raise SweepFileError(
            f"{path}: status values {sorted(map(str, statuses - {OK, ERROR}))} are neither "
            f"{OK!r} nor {ERROR!r}; {fix}"
        )
    return table


def load_results(path: str | Path) -> pd.DataFrame:
    """A sweep's results as a DataFrame (one row per case), the file checked first."""
    return read_table(path).to_pandas()


class ResultFile:
    """The results file a sweep writes: the rows it already held, plus the new ones.

    `status_of` tells which cases are done; `add` takes finished rows; `flush` rewrites the
    file atomically when `checkpoint_s` has passed since the last write (always with
    `force`)."""

    def __init__(self, path: str | Path, checkpoint_s: float = 5.0) -> None:
        self.path = Path(path)
        self.checkpoint_s = checkpoint_s
        self._old = read_table(self.path) if self.path.exists() else rows_to_table([])
        self._new: dict[str, dict[str, object]] = {}
        self._written_at = time.monotonic()
        self._dirty = False
        ids = self._old.column("id").to_pylist()
        statuses = self._old.column("status").to_pylist()
        self._old_status: dict[str, str] = dict(zip(ids, statuses, strict=True))

    def status_of(self, case_id: str) -> str | None:
        """ "ok", "error" or None (no row yet) for a case id."""
        if case_id in self._new:
            return str(self._new[case_id]["status"])
        return self._old_status.get(case_id)

    def add(self, rows: Iterable[dict[str, object]]) -> None:
        for row in rows:
            self._new[str(row["id"])] = row
            self._dirty = True

    def order_new(self, ids: Iterable[str]) -> None:
        """Put the new rows in the order of `ids` (ids not listed go last), so that a finished
        sweep's file lists its rows in the grid's order whatever order they finished in."""
        rank = {case_id: i for i, case_id in enumerate(ids)}
        ordered = sorted(self._new, key=lambda case_id: rank.get(case_id, len(rank)))
        self._new = {case_id: self._new[case_id] for case_id in ordered}

    def flush(self, force: bool = False) -> bool:
        """Write the file if there is anything new and the checkpoint is due (or `force`);
        return whether it was written."""
        if not self._dirty:
            return False
        if not force and time.monotonic() - self._written_at < self.checkpoint_s:
            return False
        self._write()
        return True

    def table(self) -> pa.Table:
        """Every row: the old ones not replaced, then the new ones in the order they came."""
        import pyarrow as pa
        import pyarrow.compute as pc

        old = self._old
        if self._new and len(old):
            keep = pc.invert(pc.is_in(old.column("id"), value_set=pa.array(list(self._new))))
            old = old.filter(keep)
        return pa.concat_tables([old, rows_to_table(self._new.values())])

    def _write(self) -> None:
        import pyarrow.parquet as pq

        table = self.table()
        note = json.dumps({"rows": len(table), "written": time.strftime("%Y-%m-%dT%H:%M:%S")})
        metadata = {**(table.schema.metadata or {}), _NOTE_KEY: note.encode()}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            pq.write_table(table.replace_schema_metadata(metadata), tmp)
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise LaceError(
                f"cannot write the sweep results {self.path} ({exc.strerror}); check the path"
            ) from None
        self._written_at = time.monotonic()
        self._dirty = False


__all__ = [
    "COLUMNS",
    "COLUMN_NAMES",
    "MANIFEST_FIELDS_NOT_APPLICABLE",
    "SCHEMA",
    "VOLATILE_COLUMNS",
    "ResultFile",
    "SweepFileError",
    "load_results",
    "read_table",
    "rows_to_table",
]
