"""The `lace bench --peers` table as text, from `PeerRow`s (live or loaded from peers.json).

One block per case; inside it rows by tokens, batch, peer. `×floor` is the median over the
HBM floor of the bytes the step must move; `×LACE` is the median over the fastest LACE row of
the same case, batch and tokens (above 1: LACE is faster), leaving out LACE's L2-resident
variant (`L2_MARK`: its state stays in L2 between ops). Rows that did not run show their
status, and their reasons are listed under the table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from concurrency.errors import LaceError
from concurrency.peers.results import PeerRow, PeersMeta, load_results

#: What a peer's notes say when its correctness check failed (fla_peers writes it).
CHECK_FAILED = "CHECK FAILED"
#: What a row's notes say when its samples include a process's warm-up (llama_peers writes it,
#: `concurrency.peers.predict` leaves such rows out of its error summary).
WARMUP_MARK = "WARM-UP"
#: What a variant's name ends with when its working set stays in L2 across the timed ops.
L2_MARK = "(L2)"

_HEAD = (
    f"{'B':>3} {'T':>5}  {'peer':<10} {'variant':<30} {'median µs':>10} {'p10–p90 µs':>17} "
    f"{'n':>5} {'floor µs':>9} {'×floor':>7} {'×LACE':>6}"
)


def _fmt(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def lace_reference(rows: Iterable[PeerRow]) -> dict[tuple[str, int, int], float]:
    """The fastest measured LACE median per (case, batch, tokens), L2-resident variants left
    out."""
    best: dict[tuple[str, int, int], float] = {}
    for r in rows:
        if (
            r.peer == "lace"
            and r.status == "ok"
            and r.median_us is not None
            and not r.variant.endswith(L2_MARK)
        ):
            k = (r.case, r.batch, r.tokens)
            best[k] = min(best.get(k, r.median_us), r.median_us)
    return best


def format_row(row: PeerRow, reference: float | None) -> str:
    lead = f"{row.batch:>3} {row.tokens:>5}  {row.peer:<10} {row.variant[:30]:<30} "
    if row.status != "ok" or row.median_us is None:
        return lead + f"{row.status.upper():>10}  (see notes)"
    spread = "—" if row.p10_us is None else f"{_fmt(row.p10_us)}–{_fmt(row.p90_us)}"
    over_floor = row.median_us / row.floor_us if row.floor_us else None
    vs_lace = row.median_us / reference if reference and row.peer != "lace" else None
    return lead + (
        f"{row.median_us:>10.1f} {spread:>17} {row.rounds:>5} {_fmt(row.floor_us):>9} "
        f"{_fmt(over_floor, 2):>7} {_fmt(vs_lace, 2):>6}"
        + ("  CHECK FAILED" if CHECK_FAILED in row.notes else "")
        + (f"  {WARMUP_MARK}" if WARMUP_MARK in row.notes else "")
    )


def format_table(meta: PeersMeta, rows: Iterable[PeerRow]) -> str:
    """The whole table: a header naming the run, one block per case, then every row's notes
    that explain a failure, and the run's own notes."""
    rows = sorted(rows, key=lambda r: r.key)
    if not rows:
        raise LaceError("the peers result holds no rows")
    ref = lace_reference(rows)
    out: list[str] = []
    if meta.fixture:
        out.append(f"FIXTURE, NOT A MEASUREMENT: {meta.fixture}")
    out.append(f"LACE peers on {meta.device or 'an unnamed device'} ({meta.date})")
    detail = [f"driver {meta.driver}" if meta.driver else "", meta.cuda]
    detail += [f"{k} {v}" for k, v in sorted(meta.versions.items())]
    if meta.llama_cpp.get("commit"):
        detail.append(f"llama.cpp {meta.llama_cpp['commit']}")
    detail = [d for d in detail if d]
    if detail:
        out.append("  " + ", ".join(detail))
    case = None
    for r in rows:
        if r.case != case:
            case = r.case
            out += ["", f"== {case}", _HEAD]
        out.append(format_row(r, ref.get((r.case, r.batch, r.tokens))))
    problems = [r for r in rows if r.status != "ok"]
    if problems:
        out += ["", "not measured:"]
        for r in problems:
            out.append(
                f"  {r.peer} {r.case} {r.variant} B={r.batch} T={r.tokens}: {r.status}: {r.notes}"
            )
    notes = sorted({(r.peer, r.case, r.notes) for r in rows if r.status == "ok" and r.notes})
    if notes:
        out += ["", "notes:"]
        out += [f"  {peer}, {case}: {note}" for peer, case, note in notes]
    if meta.notes:
        out += [""] + [f"* {n}" for n in meta.notes]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m concurrency.peers.table",
        description="Print the peers table recorded by a GPU run (no GPU needed).",
    )
    ap.add_argument("--from-data", type=Path, required=True, help="peers.json or its folder")
    args = ap.parse_args(argv)
    try:
        meta, rows = load_results(args.from_data)
        print(format_table(meta, rows))
    except LaceError as exc:
        print(f"lace: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
