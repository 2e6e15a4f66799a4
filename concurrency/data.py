"""The manifest of recorded results under `data/` (see data/README.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from concurrency.errors import LaceError

SCHEMA = "lace-data-manifest/1"
FIELDS = (
    "file",
    "device",
    "driver",
    "cuda",
    "cupy",
    "model",
    "layer",
    "mode",
    "batch",
    "tokens",
    "policy",
    "streams",
    "date",
    "command",
)


@dataclass(frozen=True)
class DataEntry:
    """One recorded file and how it was made."""

    file: str
    device: str
    driver: str
    cuda: str
    cupy: str
    model: str
    layer: str
    mode: str
    batch: int
    tokens: int
    policy: str
    streams: int
    date: str
    command: str


def load_manifest(folder: Path) -> tuple[DataEntry, ...]:
    """The entries of `folder/manifest.json`, each checked: known schema, every field present,
    and the listed file exists and loads as a timeline."""
    from concurrency.timing.timeline import Timeline

    path = Path(folder) / "manifest.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise LaceError(f"no data manifest at {path}") from None
    except json.JSONDecodeError as exc:
        raise LaceError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise LaceError(f"{path} is not a LACE data manifest (expected schema {SCHEMA!r})")
    entries = []
    for i, raw in enumerate(doc.get("entries", [])):
        missing = [f for f in FIELDS if f not in raw]
        if missing:
            raise LaceError(f"{path}: entry {i} lacks {missing}")
        entry = DataEntry(**{f: raw[f] for f in FIELDS})
        target = Path(folder) / entry.file
        if not target.exists():
            raise LaceError(f"{path}: entry {i} lists {entry.file}, which does not exist")
        Timeline.load(target)
        entries.append(entry)
    return tuple(entries)
