"""The manifest of recorded results under `data/` (see data/README.md).

A recording (`lace record` on a GPU) writes a folder of files — measured timelines (one per
case of a representative subset), one table of replay times for every case, one table of the
race experiment — and lists each file in `data/manifest.json` with how it was made: the GPU,
the driver, CUDA, CuPy and nvmath-python versions, the graph (model, config, layer, batch), the
memory plan's policy, the schedule (streams, detector), the command, the date and the LACE
version. Notebooks, the dashboard and `lace bench --from-data` read these files on machines
without a GPU; every figure they show says whether it is measured (from here) or simulated.

`load_manifest` checks every entry (fields and their types, the file exists and loads, a
timeline's own metadata agrees with its entry, a table has its kind's columns); `load_table`
reads a table entry as a DataFrame; `write_manifest` merges new entries into a folder's
manifest (an entry for the same file is replaced).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from concurrency.errors import LaceError

if TYPE_CHECKING:
    import pandas as pd

SCHEMA = "lace-data-manifest/2"
#: What a recorded file holds: a measured Timeline, the replay-time table, the race table,
#: the peers' table (`lace bench --peers`: LACE beside fla, ggml-cuda and llama.cpp, one run),
#: or a GPU spec calibrated on the folder's recordings (`lace calibrate`).
TIMELINE, REPLAYS, RACE, PEERS, GPU_SPEC = "timeline", "replays", "race", "peers", "gpu-spec"
KINDS = (TIMELINE, REPLAYS, RACE, PEERS, GPU_SPEC)
SOURCES = ("measured", "simulated")
FIELDS = (
    "file",
    "kind",
    "device",
    "driver",
    "cuda",
    "cupy",
    "nvmath",
    "config",
    "model",
    "layer",
    "layers",
    "mode",
    "batch",
    "tokens",
    "policy",
    "streams",
    "detector",
    "date",
    "command",
    "lace_version",
    "source",
)
_INT_FIELDS = ("layers", "batch", "tokens", "streams")
_TEXT_FIELDS = tuple(f for f in FIELDS if f not in (*_INT_FIELDS, "config"))

#: The columns every table of a kind has (a table may have more).
REPLAY_COLUMNS = (
    "model",
    "config",
    "layer",
    "layers",
    "mode",
    "batch",
    "policy",
    "flow",
    "plan_source",
    "schedule",
    "streams",
    "detector",
    "weights",
    "matmul",
    "races",
    "uses_after_reuse",
    "arena_bytes",
    "replays",
    "rounds",
    "median_us",
    "p10_us",
    "p90_us",
    "floor_bytes",
    "floor_us",
    "bandwidth_gb_s",
    "floor_ratio",
    "timeline",
    "status",
    "error",
)
RACE_COLUMNS = (
    "model",
    "config",
    "layer",
    "layers",
    "batch",
    "plan",
    "policy",
    "flow",
    "plan_source",
    "streams",
    "races",
    "uses_after_reuse",
    "expected",
    "runs",
    "bitwise_runs",
    "wrong_runs",
    "widened",
    "max_error",
    "tolerance",
    "safe_vs_float64",
    "verdict",
    "status",
    "error",
)
TABLE_COLUMNS: Mapping[str, tuple[str, ...]] = {REPLAYS: REPLAY_COLUMNS, RACE: RACE_COLUMNS}
#: Entry fields `load_table` adds to each table's rows (where and when it was recorded).
ENTRY_COLUMNS = ("file", "device", "driver", "cuda", "date", "lace_version", "source")
#: Entry fields a timeline's own metadata (RunMeta) must agree with.
_META_FIELDS = ("model", "layer", "mode", "batch", "tokens", "policy", "streams", "source")


@dataclass(frozen=True)
class DataEntry:
    """One recorded file and how it was made.

    For a timeline the graph fields (model … streams) name its one case; for a table, which
    holds many cases in its own columns, they are empty ("" and 0). `config` is a JSON object:
    the preset, the fields changed from it, the weight type, the matmul path, n_ctx and the
    memory flow (`cases.GpuCase.config_doc`)."""

    file: str
    kind: str
    device: str
    driver: str
    cuda: str
    cupy: str
    nvmath: str
    config: Mapping[str, Any] = field(hash=False)
    model: str
    layer: str
    layers: int
    mode: str
    batch: int
    tokens: int
    policy: str
    streams: int
    detector: str
    date: str
    command: str
    lace_version: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["config"] = dict(self.config)
        return out


def entry_from_dict(raw: object, where: str) -> DataEntry:
    """A DataEntry from its JSON object, every field checked; LaceError names `where`."""
    if not isinstance(raw, dict):
        raise LaceError(f"{where} is not a JSON object")
    missing = [f for f in FIELDS if f not in raw]
    if missing:
        raise LaceError(f"{where} lacks {missing}")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise LaceError(f"{where} has unknown fields {unknown}; data/README.md lists the fields")
    for name in _TEXT_FIELDS:
        if not isinstance(raw[name], str):
            raise LaceError(f"{where}: {name!r} must be text, got {raw[name]!r}")
    for name in _INT_FIELDS:
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise LaceError(f"{where}: {name!r} must be a whole number ≥ 0, got {value!r}")
    if not isinstance(raw["config"], dict):
        raise LaceError(f"{where}: 'config' must be a JSON object, got {raw['config']!r}")
    if raw["kind"] not in KINDS:
        raise LaceError(f"{where}: kind must be one of {', '.join(KINDS)}, got {raw['kind']!r}")
    if raw["source"] not in SOURCES:
        raise LaceError(
            f"{where}: source must be one of {', '.join(SOURCES)}, got {raw['source']!r}"
        )
    return DataEntry(**{f: raw[f] for f in FIELDS})


def _read_doc(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LaceError(f"no data manifest at {path}") from None
    except json.JSONDecodeError as exc:
        raise LaceError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise LaceError(f"{path} is not a LACE data manifest (expected schema {SCHEMA!r})")
    if not isinstance(doc.get("entries", []), list):
        raise LaceError(f"{path}: 'entries' must be a list")
    return doc


def load_manifest(folder: str | Path, *, check_files: bool = True) -> tuple[DataEntry, ...]:
    """The entries of `folder/manifest.json`, each checked: known schema, every field present
    with its type, and (check_files) the listed file exists and loads: a timeline whose own
    metadata agrees with the entry, or a table with its kind's columns."""
    folder = Path(folder)
    path = folder / "manifest.json"
    doc = _read_doc(path)
    entries = []
    for i, raw in enumerate(doc.get("entries", [])):
        entry = entry_from_dict(raw, f"{path}: entry {i}")
        if check_files:
            _check_file(folder, entry, f"{path}: entry {i}")
        entries.append(entry)
    return tuple(entries)


def _check_file(folder: Path, entry: DataEntry, where: str) -> None:
    target = folder / entry.file
    if not target.is_file():
        raise LaceError(f"{where} lists {entry.file}, which does not exist")
    if entry.kind == TIMELINE:
        from concurrency.timing.timeline import Timeline

        meta = Timeline.load(target).meta
        for name in _META_FIELDS:
            if getattr(meta, name) != getattr(entry, name):
                raise LaceError(
                    f"{where}: {entry.file} says {name} = {getattr(meta, name)!r}, the entry "
                    f"{getattr(entry, name)!r}; record it again"
                )
        if meta.device != entry.device:
            raise LaceError(
                f"{where}: {entry.file} was recorded on {meta.device!r}, the entry says "
                f"{entry.device!r}"
            )
    elif entry.kind == PEERS:
        from concurrency.peers.results import load_results

        load_results(target)
    elif entry.kind == GPU_SPEC:
        from concurrency.timing.gpus import load_gpu_spec

        load_gpu_spec(target)
    else:
        read_table(target, entry.kind)


def read_table(path: str | Path, kind: str) -> pd.DataFrame:
    """A recorded table (Parquet) with the columns of its kind, or one LaceError line."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise LaceError(f"{path} is not a readable Parquet table ({exc})") from None
    missing = [c for c in TABLE_COLUMNS[kind] if c not in table.column_names]
    if missing:
        raise LaceError(f"{path} is not a LACE {kind} table: it lacks the columns {missing}")
    return table.to_pandas()


def load_table(folder: str | Path, kind: str) -> pd.DataFrame:
    """Every table of `kind` the manifest of `folder` lists, concatenated, with the entry's
    ENTRY_COLUMNS added (no rows when there is none)."""
    import pandas as pd

    if kind not in TABLE_COLUMNS:
        raise LaceError(f"kind must be one of {', '.join(TABLE_COLUMNS)}, got {kind!r}")
    frames = []
    for entry in load_manifest(folder, check_files=False):
        if entry.kind != kind:
            continue
        frame = read_table(Path(folder) / entry.file, kind)
        for name in ENTRY_COLUMNS:
            frame[name] = getattr(entry, name)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*TABLE_COLUMNS[kind], *ENTRY_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def write_manifest(folder: str | Path, entries: Iterable[DataEntry]) -> Path:
    """Add `entries` to `folder/manifest.json` (created when absent; an existing entry for the
    same file is replaced), sorted by file; return the manifest's path."""
    folder = Path(folder)
    path = folder / "manifest.json"
    old = (
        [entry_from_dict(r, str(path)) for r in _read_doc(path)["entries"]] if path.exists() else []
    )
    merged = {e.file: e for e in old}
    for e in entries:
        entry_from_dict(e.to_dict(), f"new entry for {e.file}")  # same checks as reading
        merged[e.file] = e
    doc = {"schema": SCHEMA, "entries": [merged[k].to_dict() for k in sorted(merged)]}
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def peer_files(folder: str | Path) -> tuple[Path, ...]:
    """The peers' result files (`lace bench --peers`) the manifest of `folder` lists."""
    return tuple(
        Path(folder) / e.file for e in load_manifest(folder, check_files=False) if e.kind == PEERS
    )


def default_folder() -> Path:
    """The repository's `data/` folder (beside the `concurrency` package of a checkout)."""
    return Path(__file__).resolve().parent.parent / "data"


def entries_of(entries: Sequence[DataEntry], kind: str) -> tuple[DataEntry, ...]:
    """The entries of one kind, in manifest order."""
    return tuple(e for e in entries if e.kind == kind)
