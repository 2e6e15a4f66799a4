"""The gated delta rule's kernels on the device against the peers (issue 13):
`python -m concurrency.peers.gdn_bench --out DIR`.

What it times, all GPU time from CUDA events around CUDA-graph replays:

* LACE's GATED_DELTA_NET op alone (`lace_peers.lace_core_rows`, the peers table's method):
  decode B = 1, 4, 16, 64 (recurrent kernel), prefill T = 512 (B = 1, 4) and T = 2048 (B = 1)
  (the chunked kernels: split TF32, fp32-accurate);
* the same prefill cases with gdn="chunked_tf32" (single-pass TF32, gdn-reference §5.4's 5e-3);
* each chunked kernel alone (prep, state, out): a graph of `KERNEL_REPEATS` launches of it;
* Qwen3.5-27B's GDN decode layer, one stream against the schedule's streams
  (`bench.compare_streams`, alternating rounds), bf16 weights.

It prints one table last, with the figures of a peers file (fla 0.6.0, ggml-cuda, and LACE as
it was when scripts/gpu_peers.sh recorded that file; default: data/'s) next to LACE's now,
and per row the issue's goal — decode no slower than the faster of fla and ggml-cuda, prefill
no slower than fla's chunk kernel — met or not. Every phase is guarded: a failure becomes a
line saying so and the other phases still run. Results: DIR/gdn-bench.json, DIR/gdn-table.txt.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from concurrency.peers.cases import DECODE_BATCHES, PREFILL_CASES, core_floor_us, qwen35_27b

#: The peers' rows this benchmark sets LACE against: the GDN core op in a peers file.
CORE_CASES = ("gdn core decode", "gdn core prefill")
#: Launches of one kernel per captured graph when timing the chunked kernels one by one.
KERNEL_REPEATS = 20
KERNEL_REPLAYS = 5
RESULT_FILE = "gdn-bench.json"
TABLE_FILE = "gdn-table.txt"


def peer_us(peers_file: str | Path | None = None) -> dict[tuple[int, int], dict[str, float]]:
    """(batch, tokens) → {peer: median µs} of the GDN core op in a peers file written by
    scripts/gpu_peers.sh (default: the one the repository's data/ manifest lists): the figures
    of LACE (as recorded there), fla 0.6.0 and ggml-cuda, measured in one run on one device."""
    from concurrency.data import default_folder, peer_files
    from concurrency.errors import LaceError
    from concurrency.peers.results import load_results

    if peers_file is None:
        found = peer_files(default_folder())
        if not found:
            raise LaceError("data/ lists no peers file; pass --peers FILE (scripts/gpu_peers.sh)")
        peers_file = found[-1]
    _, rows = load_results(Path(peers_file))
    table: dict[tuple[int, int], dict[str, float]] = {}
    for r in rows:
        if r.case in CORE_CASES and r.status == "ok" and r.median_us is not None:
            table.setdefault((r.batch, r.tokens), {})[r.peer] = float(r.median_us)
    return table


def goal_us(peers: dict[str, float], tokens: int) -> float | None:
    """Issue 13's goal for one case: decode no slower than the faster of fla and ggml-cuda,
    prefill no slower than fla's chunk kernel (None where the peers file lacks them)."""
    wanted = ("fla", "ggml-cuda") if tokens == 1 else ("fla",)
    known = [peers[p] for p in wanted if p in peers]
    return min(known) if len(known) == len(wanted) else None


def _guard(log: Callable[[str], None], what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # a phase that fails is reported, the others still run
        log(f"{what}: FAILED {exc!r}")
        log(traceback.format_exc(limit=3))
        return None


def core_rows(replays: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """LACE's op alone through the peers harness (recurrent for decode, chunked for prefill)."""
    from concurrency.peers.lace_peers import lace_core_rows

    rows = []
    for r in lace_core_rows(qwen35_27b(), replays, log):
        rows.append(
            {
                "batch": r.batch,
                "tokens": r.tokens,
                "form": "recurrent" if r.tokens == 1 else "chunked",
                "status": r.status,
                "median_us": r.median_us,
                "p10_us": r.p10_us,
                "p90_us": r.p90_us,
                "notes": r.notes,
            }
        )
    return rows


def tf32_rows(replays: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The prefill cases with gdn="chunked_tf32", timed as lace_core_rows times them."""
    from concurrency.execute.gpu.bench import replay_time
    from concurrency.peers.lace_peers import core_graph

    rows = []
    for b, t in PREFILL_CASES:
        timing = _guard(
            log,
            f"chunked_tf32 B={b} T={t}",
            lambda b=b, t=t: replay_time(
                core_graph(qwen35_27b(), b, t, 1),
                streams="one",
                weight_dtype="f32",
                replays=max(20, replays // 4),
                gdn="chunked_tf32",
            ),
        )
        if timing is None:
            continue
        rows.append(
            {
                "batch": b,
                "tokens": t,
                "form": "chunked_tf32",
                "status": "ok",
                "median_us": timing.median_us,
                "p10_us": timing.p10_us,
                "p90_us": timing.p90_us,
            }
        )
        log(f"  lace chunked_tf32 B={b} T={t}: {timing.median_us:.1f} µs")
    return rows


def kernel_times_us(run: Any, index: int, repeats: int, replays: int) -> list[float]:
    """GPU time of each launch of node `index` alone: a CUDA graph of `repeats` launches of it,
    replayed `replays` times, µs per launch (the state kernel then rewrites V_new over itself:
    the values drift, the work does not)."""
    cp = run.cp
    main = run.streams[0]
    mode = getattr(cp.cuda.runtime, "streamCaptureModeRelaxed", None)
    out = []
    for call in run.calls[index]:
        cp.cuda.Device().synchronize()
        if mode is None:
            main.begin_capture()
        else:
            main.begin_capture(mode)
        with main:
            for _ in range(repeats):
                call(main)
        graph = main.end_capture()
        graph.launch(main)
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record(main)
        for _ in range(replays):
            graph.launch(main)
        end.record(main)
        main.synchronize()
        out.append(cp.cuda.get_elapsed_time(start, end) * 1000.0 / (repeats * replays))
    return out


def breakdown_rows(log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Each chunked kernel alone, at every prefill case, both forms."""
    from concurrency.execute.gpu.bench import random_device_inputs, timed_plan
    from concurrency.execute.gpu.runner import DeviceRun
    from concurrency.peers.lace_peers import core_graph

    rows = []
    for form in ("chunked", "chunked_tf32"):
        for b, t in PREFILL_CASES:

            def one(b: int = b, t: int = t, form: str = form) -> dict[str, Any]:
                graph = core_graph(qwen35_27b(), b, t, 1)
                lp = timed_plan(graph, "one", "happens_before", "f32", form)
                (index,) = [n.index for n in lp.nodes if n.op == "GATED_DELTA_NET"]
                run = DeviceRun(lp)
                try:
                    random_device_inputs(run)
                    run.run_eager()
                    times = kernel_times_us(run, index, KERNEL_REPEATS, KERNEL_REPLAYS)
                finally:
                    run.free()
                kernels = [launch.kernel for launch in lp.nodes[index].launches]
                return {"batch": b, "tokens": t, "form": form, "kernels": kernels, "us": times}

            row = _guard(log, f"kernels {form} B={b} T={t}", one)
            if row is not None:
                rows.append(row)
                named = zip(row["kernels"], row["us"], strict=True)
                parts = ", ".join(f"{k} {u:.1f}" for k, u in named)
                log(f"  kernels {form} B={b} T={t}: {parts} µs")
    return rows


def layer_rows(log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Qwen3.5-27B's GDN decode layer, one stream against the schedule's streams."""
    from concurrency.execute.gpu.bench import compare_streams
    from concurrency.graph.builders import build_graph
    from concurrency.graph.config import get_config

    cfg = get_config("qwen3.5-27b")
    rows = []
    for b in DECODE_BATCHES:
        pair = _guard(
            log,
            f"layer B={b}",
            lambda b=b: compare_streams(build_graph(cfg, "gdn", "decode", b), weight_dtype="bf16"),
        )
        if pair is None:
            continue
        one, multi = pair
        rows.append(
            {
                "batch": b,
                "one_us": one.median_us,
                "multi_us": multi.median_us,
                "streams": multi.streams,
                "floor_us": one.floor_us,
            }
        )
        log(f"  layer B={b}: one {one.median_us:.1f}, multi {multi.median_us:.1f} µs")
    return rows


def _fmt(x: float | None, width: int = 8) -> str:
    return f"{x:>{width}.1f}" if x is not None else f"{'—':>{width}}"


def format_tables(
    results: dict[str, Any], peers: dict[tuple[int, int], dict[str, float]]
) -> list[str]:
    """The compact tables: core op against the peers (`peer_us`) and the goal, the chunked
    kernels one by one, the decode layer's streams."""
    dims = qwen35_27b()
    core = {(r["batch"], r["tokens"]): r for r in results.get("core", [])}
    tf32 = {(r["batch"], r["tokens"]): r for r in results.get("tf32", [])}
    lines = [
        "GDN core op (Qwen3.5-27B: Hk 16, Hv 48, dk = dv 128, f32), µs, CUDA-graph replays",
        f"{'case':<16} {'LACE':>8} {'tf32':>8} {'recorded':>8} {'fla':>8} {'ggml':>8} "
        f"{'floor':>8} {'goal':>8}  met",
    ]
    for b, t in sorted(set(peers) | set(core), key=lambda bt: (bt[1], bt[0])):
        known = peers.get((b, t), {})
        before, fla, ggml = (known.get(p) for p in ("lace", "fla", "ggml-cuda"))
        row = core.get((b, t), {})
        lace = row.get("median_us") if row.get("status") == "ok" else None
        alt = tf32.get((b, t), {}).get("median_us")
        floor = core_floor_us(dims, b) if t == 1 else None
        goal = goal_us(known, t)
        if lace is None or goal is None:
            met = "—"
        else:
            met = "yes" if lace <= goal else f"no ({lace / goal:.2f}×)"
        case = f"decode B={b}" if t == 1 else f"prefill B={b} T={t}"
        lines.append(
            f"{case:<16} {_fmt(lace)} {_fmt(alt)} {_fmt(before)} {_fmt(fla)} {_fmt(ggml)} "
            f"{_fmt(floor)} {_fmt(goal)}  {met}"
        )
    lines.append("tf32: gdn='chunked_tf32' (single-pass TF32, ≈1e-3); LACE's chunked is split TF32")
    lines.append("recorded, fla, ggml: the peers file's figures (LACE, fla 0.6.0, ggml-cuda)")
    if results.get("kernels"):
        lines += ["", "chunked kernels one by one, µs"]
        for r in results["kernels"]:
            named = zip(r["kernels"], r["us"], strict=True)
            parts = "  ".join(f"{k.split('_')[2]} {u:7.1f}" for k, u in named)
            head = f"{r['form']:<13} B={r['batch']} T={r['tokens']:<5}"
            lines.append(f"{head} {parts}  sum {sum(r['us']):7.1f}")
    if results.get("layer"):
        lines += [
            "",
            "Qwen3.5-27B GDN decode layer (bf16 weights), µs",
            "  B      one    multi  str  speedup   floor  ×floor",
        ]
        for r in results["layer"]:
            lines.append(
                f"{r['batch']:>3} {r['one_us']:>8.1f} {r['multi_us']:>8.1f} {r['streams']:>4} "
                f"{r['one_us'] / r['multi_us']:>8.3f} {r['floor_us']:>7.1f} "
                f"{r['multi_us'] / r['floor_us']:>6.2f}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gdn-bench", help="result folder")
    parser.add_argument(
        "--peers", default=None, help="peers file to compare with (default: data/'s)"
    )
    parser.add_argument("--replays", type=int, default=200, help="replays per decode case")
    parser.add_argument(
        "--skip", nargs="*", default=(), choices=("core", "tf32", "kernels", "layer")
    )
    args = parser.parse_args(argv)
    peers = peer_us(args.peers)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def log(text: str) -> None:
        print(f"[{time.time() - t0:6.1f} s] {text}", flush=True)

    results: dict[str, Any] = {}
    phases: dict[str, Callable[[], Any]] = {
        "core": lambda: core_rows(args.replays, log),
        "tf32": lambda: tf32_rows(args.replays, log),
        "kernels": lambda: breakdown_rows(log),
        "layer": lambda: layer_rows(log),
    }
    for name, fn in phases.items():
        if name in args.skip:
            continue
        log(f"== {name}")
        results[name] = _guard(log, name, fn) or []
        (out / RESULT_FILE).write_text(json.dumps(results, indent=1), encoding="utf-8")
    table = format_tables(results, peers)
    (out / TABLE_FILE).write_text("\n".join(table) + "\n", encoding="utf-8")
    print("\n".join(table), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
