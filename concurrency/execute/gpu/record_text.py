"""What `lace record` prints: a compact summary (a few kilobytes, so that it fits the end of a
GPU machine's output) and the full report (every table), from a `record.Recording`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from concurrency.execute.gpu.record import ONE_STREAM_POLICY, TIMELINE_POLICY, Recording


def summary_lines(rec: Recording) -> list[str]:
    """A compact summary (a few kilobytes): the machine, the race experiment per case, the
    speedups and ×floor of happens_before per graph and batch, what was skipped or failed."""
    env = rec.env
    lines = [
        f"recorded on {env['device']} (driver {env['driver']}, CUDA {env['cuda']}, "
        f"CuPy {env['cupy']}, nvmath {env['nvmath']}) at {rec.date}",
        f"files: {len(rec.files)} under {rec.folder / rec.name}",
    ]
    if rec.race_rows:
        lines += ["", "race experiment (wrong runs / runs; checker: R races, U uses after reuse)"]
        lines += race_summary(rec.race_rows)
    if rec.replay_rows:
        lines += ["", f"replays: one stream ({ONE_STREAM_POLICY}) ÷ multi ({TIMELINE_POLICY})"]
        lines += speedup_grid(rec.replay_rows)
    skipped = sum(r["status"].startswith("not run") for r in [*rec.race_rows, *rec.replay_rows])
    failed = [r for r in [*rec.race_rows, *rec.replay_rows] if r["status"] == "error"]
    if skipped:
        lines.append(f"not run (time budget): {skipped} row(s)")
    for r in failed[:8]:
        lines.append(
            f"FAILED {r['model']} {r['layer']} B={r['batch']} {r['policy']}: {r['error'][:150]}"
        )
    if len(failed) > 8:
        lines.append(f"… {len(failed) - 8} more failures (see the tables)")
    lines += [f"note: {n[:200]}" for n in rec.notes[:5]]
    return lines


_SHORT = {
    "happens_before": "hb",
    "sequential": "seq",
    "interleave": "intl",
    "no_alloc_free": "naf",
    "alloc_dep": "dep",
    "no_reuse": "nore",
    "torch_caching": "tc",
    "torch_record_stream": "trs",
    "planted": "planted",
}


def race_summary(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per race case: every plan's wrong/runs and whether that is what the checker
    demands (! marks a FAIL)."""
    cases: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        layer = f"stack×{r['layers']}" if r["layer"] == "stack" else r["layer"]
        cases.setdefault(f"{r['model']} {layer} B={r['batch']}", []).append(r)
    lines = []
    for label, members in cases.items():
        parts = []
        for r in members:
            name = str(r["plan"])
            for long, short in _SHORT.items():
                name = name.replace(long, short)
            name = name.replace(" (one stream)", "/1s")
            if r["status"] != "ok":
                parts.append(f"{name} {r['status']}")
                continue
            mark = "!" if r["verdict"] == "FAIL" else ""
            parts.append(
                f"{mark}{name} {r['wrong_runs']}/{r['runs']} "
                f"(R{r['races']} U{r['uses_after_reuse']})"
            )
        f64 = next((r["safe_vs_float64"] for r in members if r["status"] == "ok"), math.nan)
        f64_text = "" if math.isnan(f64) else f" [ref vs f64 {f64:.1e}]"
        lines.append(f"  {label}{f64_text}: " + "; ".join(parts))
    return lines


def speedup_grid(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per graph, per batch: one-stream µs / multi µs (speedup) and multi ×floor."""
    from concurrency.execute.gpu.bench import bench_rows

    paired = bench_rows(rows, [TIMELINE_POLICY])
    graphs: dict[str, dict[int, Mapping[str, Any]]] = {}
    for r in paired:
        layer = f"stack×{r['layers']}" if r["layer"] == "stack" else r["layer"]
        graphs.setdefault(f"{r['model']} {layer}", {})[r["batch"]] = r
    batches = sorted({b for g in graphs.values() for b in g})
    lines = [f"  {'graph':<22}" + "".join(f"{'B=' + str(b):>19}" for b in batches)]
    for label, by_batch in graphs.items():
        cells = []
        for b in batches:
            r = by_batch.get(b)
            cells.append(f"{r['one_us']:.0f}/{r['multi_us']:.0f} {r['speedup']:.2f}×" if r else "-")
        lines.append(f"  {label[:22]:<22}" + "".join(f" {c:>18}" for c in cells))
    floors = [
        f"{label}: " + " ".join(f"B{b} {r['floor_ratio']:.1f}" for b, r in sorted(g.items()))
        for label, g in graphs.items()
    ]
    lines.append("  multi-stream time ÷ HBM floor: " + ("; ".join(floors) or "-"))
    return lines


def full_report(rec: Recording) -> list[str]:
    """Every table in full (for a report file): the race table, the bench table of every
    policy, the replay rows that failed or were skipped."""
    from concurrency.execute.gpu.bench import bench_rows, bench_table
    from concurrency.execute.gpu.race import race_table

    lines = summary_lines(rec)
    if rec.race_rows:
        lines += ["", "== race table", *race_table(rec.race_rows)]
    if rec.replay_rows:
        lines += ["", "== one stream vs the schedule's streams, every policy"]
        lines += bench_table(bench_rows(rec.replay_rows))
        bad = [r for r in rec.replay_rows if r["status"] != "ok"]
        lines += [
            f"  {r['status']}: {r['model']} {r['layer']} B={r['batch']} {r['schedule']} "
            f"{r['policy']} {r['error'][:200]}"
            for r in bad
        ]
    lines += ["", "== files", *rec.files]
    return lines
