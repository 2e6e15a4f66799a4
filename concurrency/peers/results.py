"""The peers table as values: one `PeerRow` per (peer, case, variant, batch, tokens), the run's
`PeersMeta`, and the JSON file (`peers.json`, schema `lace-peers/1`) that holds both.

A peer that could not be built, imported or run is a row too, with its status and the reason in
`notes`, so a table never hides a missing peer. Times are GPU time in µs except where `notes`
says otherwise (llama.cpp end to end is host wall time: per decode step, or of the whole
prompt phase for the prefill case).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from concurrency.errors import LaceError

SCHEMA = "lace-peers/1"
RESULT_FILE = "peers.json"

#: A row's status: measured, or why not.
STATUSES = ("ok", "failed", "not built", "not imported", "not run")

#: The peers, in table order.
PEERS = ("lace", "fla", "torch+fla", "ggml-cuda", "llama.cpp")

#: The cases, in table order (what is timed, at which granularity).
CASES = (
    "gdn core decode",
    "gdn core prefill",
    "gdn layer decode",
    "4-layer model decode step",
    "4-layer model prefill",
)


@dataclass(frozen=True)
class PeerRow:
    """One measured (or failed) configuration of one peer."""

    peer: str
    case: str
    variant: str
    batch: int
    tokens: int
    status: str = "ok"
    median_us: float | None = None
    p10_us: float | None = None
    p90_us: float | None = None
    rounds: int = 0
    floor_us: float | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        if self.peer not in PEERS:
            raise LaceError(f"unknown peer {self.peer!r}; one of {', '.join(PEERS)}")
        if self.case not in CASES:
            raise LaceError(f"unknown case {self.case!r}; one of {', '.join(CASES)}")
        if self.status not in STATUSES:
            raise LaceError(f"unknown status {self.status!r}; one of {', '.join(STATUSES)}")
        if self.batch < 1 or self.tokens < 1:
            raise LaceError(f"{self.peer} {self.case}: batch and tokens must be ≥ 1")
        if self.status == "ok":
            if self.median_us is None or not math.isfinite(self.median_us):
                raise LaceError(f"{self.peer} {self.case} B={self.batch}: ok without a median")
            if self.rounds < 1:
                raise LaceError(f"{self.peer} {self.case} B={self.batch}: ok with no samples")
        elif not self.notes:
            raise LaceError(f"{self.peer} {self.case}: status {self.status!r} needs a reason")

    @property
    def key(self) -> tuple[int, int, int, int, str]:
        """Table order: case, batch, tokens, peer, variant."""
        return (
            CASES.index(self.case),
            self.tokens,
            self.batch,
            PEERS.index(self.peer),
            self.variant,
        )


def failed_row(
    peer: str, case: str, variant: str, batch: int, tokens: int, status: str, reason: str
) -> PeerRow:
    """A row for a configuration that did not run: `status` and a one-line `reason`."""
    line = " ".join(str(reason).split())[:300] or "no reason given"
    return PeerRow(peer, case, variant, batch, tokens, status=status, notes=line)


def summarize(samples_us: Sequence[float]) -> tuple[float, float, float, int]:
    """(median, p10, p90, count) of samples in µs (linear interpolation between ranks)."""
    values = sorted(float(s) for s in samples_us)
    if not values:
        raise LaceError("no samples to summarize")
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise LaceError(f"samples must be finite and ≥ 0, got {values[:5]}")

    def q(p: float) -> float:
        pos = p * (len(values) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(values) - 1)
        return values[lo] + (values[hi] - values[lo]) * (pos - lo)

    return q(0.5), q(0.1), q(0.9), len(values)


def measured_row(
    peer: str,
    case: str,
    variant: str,
    batch: int,
    tokens: int,
    samples_us: Sequence[float],
    *,
    floor_us: float | None = None,
    notes: str = "",
) -> PeerRow:
    median, p10, p90, n = summarize(samples_us)
    return PeerRow(peer, case, variant, batch, tokens, "ok", median, p10, p90, n, floor_us, notes)


@dataclass(frozen=True)
class PeersMeta:
    """How and where the rows were measured (the manifest's fields and more)."""

    date: str
    command: str
    device: str = ""
    driver: str = ""
    cuda: str = ""
    cupy: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    llama_cpp: dict[str, str] = field(default_factory=dict)
    phases_s: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    fixture: str = ""  # non-empty: the file is a hand-written fixture, not a measurement

    def manifest_entry(self, file: str = RESULT_FILE) -> dict[str, object]:
        """The data/manifest.json entry for this run's result file (`kind` "peers")."""
        return {
            "file": file,
            "kind": "peers",
            "device": self.device,
            "driver": self.driver,
            "cuda": self.cuda,
            "cupy": self.cupy,
            "model": "qwen3.5-27b",
            "layer": "gdn",
            "mode": "decode+prefill",
            "batch": 0,
            "tokens": 0,
            "policy": "",
            "streams": 0,
            "date": self.date,
            "command": self.command,
        }


def to_document(meta: PeersMeta, rows: Iterable[PeerRow]) -> dict[str, object]:
    doc_meta = asdict(meta)
    doc_meta["notes"] = list(meta.notes)
    return {
        "schema": SCHEMA,
        "meta": doc_meta,
        "manifest_entry": meta.manifest_entry(),
        "rows": [asdict(r) for r in sorted(rows, key=lambda r: r.key)],
    }


def save_results(path: Path, meta: PeersMeta, rows: Iterable[PeerRow]) -> Path:
    """Write the table and its metadata as one JSON document (rows in table order)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_document(meta, rows), indent=1, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def load_results(path: Path) -> tuple[PeersMeta, tuple[PeerRow, ...]]:
    """Read `peers.json` (or the folder holding it): metadata and rows, every row checked."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULT_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LaceError(f"no peers result at {path}; run `lace bench --peers` on a GPU") from None
    except json.JSONDecodeError as exc:
        raise LaceError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise LaceError(f"{path} is not a LACE peers result (expected schema {SCHEMA!r})")
    meta_fields = {f.name for f in fields(PeersMeta)}
    raw_meta = doc.get("meta", {})
    unknown = set(raw_meta) - meta_fields
    if unknown or "date" not in raw_meta or "command" not in raw_meta:
        raise LaceError(f"{path}: metadata fields {sorted(raw_meta)} do not match {SCHEMA}")
    raw_meta = dict(raw_meta)
    raw_meta["notes"] = tuple(raw_meta.get("notes", ()))
    meta = PeersMeta(**raw_meta)
    row_fields = {f.name for f in fields(PeerRow)}
    rows = []
    for i, raw in enumerate(doc.get("rows", [])):
        if not isinstance(raw, dict) or set(raw) - row_fields:
            raise LaceError(f"{path}: row {i} has fields outside {sorted(row_fields)}")
        try:
            rows.append(PeerRow(**raw))
        except TypeError as exc:
            raise LaceError(f"{path}: row {i} is incomplete ({exc})") from None
    return meta, tuple(rows)
