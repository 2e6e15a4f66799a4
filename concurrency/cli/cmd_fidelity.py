"""`lace fidelity`: LACE's plans against ggml-alloc's own (the ggml library through ctypes),
or with `--engine` LACE's graphs and offsets against the running llama.cpp, plus the races the
engine's own offsets produce under the multi-stream schedule.

A comparison the user asked for that cannot run (no llama-cpp-python, no libggml) is an error
naming the fix (exit 2), never a table with a note; a comparison that runs and finds a
difference exits 1.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from concurrency.cli.common import add_context_args, add_format_arg, positive_int
from concurrency.cli.output import Result
from concurrency.cli.progress import Progress

if TYPE_CHECKING:
    from concurrency.oracle.fidelity import Case

ENGINE_MODELS = ("tiny", "qwen3.5-27b", "qwen3.5-35b-a3b", "qwen3-next-80b-a3b")
ORACLE_MODELS = ("tiny", "qwen3.5-0.8b", "qwen3.5-27b")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from concurrency.graph.branches import DETECTORS

    p.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="MODEL",
        help=f"presets or config files (default {' '.join(ORACLE_MODELS)}; with --engine "
        f"{' '.join(ENGINE_MODELS)}, scaled down)",
    )
    p.add_argument("--batches", nargs="+", type=positive_int, default=[1, 4], metavar="B")
    p.add_argument(
        "--detector",
        choices=DETECTORS,
        default="ggml",
        help="regions for interleave and alloc_dep (default: ggml-cuda's own; not with "
        "--engine, whose race table uses LACE's general detector)",
    )
    add_format_arg(p)
    p.add_argument(
        "--engine",
        action="store_true",
        help="compare with the running llama.cpp instead: graphs, offsets, races "
        "(needs llama-cpp-python: make oracle)",
    )
    p.add_argument(
        "--tokens", type=positive_int, default=8, help="prompt tokens per sequence (--engine)"
    )
    add_context_args(p)


def run(args: argparse.Namespace, progress: Progress) -> Result:
    if args.engine:
        return _engine_fidelity(args, progress)
    from concurrency.oracle.fidelity import fidelity_table, preset_cases
    from concurrency.oracle.ggml_lib import Ggml

    ggml = Ggml.load()  # no libggml: a MissingToolError naming the fix
    cases = preset_cases(args.models or list(ORACLE_MODELS), args.batches)
    rows = []
    for case in progress.steps(f"planning {len(cases)} graphs with ggml", cases, _case_label):
        rows += fidelity_table(ggml, [case], args.detector)
    status = 0 if all(r.equal for r in rows) else 1
    if args.format == "json":
        return Result.json([r.row() for r in rows], status)
    lines = [f"{'graph':42} {'policy':11} {'LACE bytes':>12} {'ggml bytes':>12}  offsets equal?"]
    for r in rows:
        lines.append(
            f"{r.graph:42} {r.policy:11} {r.lace_bytes:>12} {r.ggml_bytes:>12}  "
            f"{'yes' if r.equal else f'NO ({len(r.mismatched)} differ)'}"
        )
    lines.append(f"{sum(r.equal for r in rows)} of {len(rows)} plans identical to ggml-alloc's")
    return Result.lines(lines, status)


def _case_label(case: Case) -> str:
    return f"{case.model} {case.layer} {case.mode} B={case.batch}"


def _engine_fidelity(args: argparse.Namespace, progress: Progress) -> Result:
    """Two tables: LACE's graphs and offsets against the engine's, for scaled-down configs;
    the races the engine's own offsets produce under the seed's schedule, per preset."""
    from concurrency.graph.config import get_config, scaled_down
    from concurrency.memory.engine_hazards import engine_hazards
    from concurrency.memory.sites import format_sites
    from concurrency.oracle.engine import llama_version, probe
    from concurrency.oracle.engine_compare import CPU_ALIGNMENT, engine_fidelity

    models = args.models or list(ENGINE_MODELS)
    version = llama_version()  # no llama-cpp-python: a MissingToolError naming the fix
    configs = [scaled_down(get_config(name)) for name in models]
    probes = [(cfg, b) for cfg in configs for b in args.batches]
    fids = [
        engine_fidelity(probe(cfg, b, args.tokens, n_ubatch=args.n_ubatch, n_ctx=args.n_ctx), cfg)
        for cfg, b in progress.steps(
            f"probing the engine ({len(probes)} runs)", probes, lambda p: f"{p[0].name} B={p[1]}"
        )
    ]
    cases = [(m, b) for m in models for b in args.batches]
    races = [
        engine_hazards(m, b, n_ctx=args.n_ctx, n_ubatch=args.n_ubatch)
        for m, b in progress.steps(
            f"checking the engine's offsets ({len(cases)} graphs)",
            cases,
            lambda c: f"{c[0]} B={c[1]}",
        )
    ]
    ok = all(not f.graph_mismatches and not f.offset_mismatches for f in fids)
    status = 0 if ok else 1
    setting = {
        "llama_cpp_python": version,
        "backend": "CPU",
        "alignment": CPU_ALIGNMENT,
        "n_ctx": args.n_ctx,
        "n_ubatch": args.n_ubatch,
        "prompt_tokens": args.tokens,
        "batches": list(args.batches),
        "weights": "random (scaled-down configs, head structure kept)",
    }
    summary = {
        "configs": len(fids),
        "node_mismatches": sum(len(f.graph_mismatches) for f in fids),
        "offset_mismatches": sum(len(f.offset_mismatches) for f in fids),
        "compute_tensors_checked": sum(f.compute_tensors for f in fids),
        "ok": ok,
    }
    race_note = (
        "4-layer stacks, sequential, CPU alignment: the engine's offsets (reserve, then "
        "replay) vs a plan of the decode graph alone, under the multi-stream schedule"
    )
    if args.format == "json":
        doc = {
            "engine": setting,
            "summary": summary,
            "configs": [f.row() for f in fids],
            "races": {"what": race_note, "rows": [r.row() for r in races]},
        }
        return Result.json(doc, status)
    lines = [
        f"LACE vs the running engine (llama-cpp-python {version}, random-weight GGUF, CPU, "
        f"n_ctx {args.n_ctx}, n_ubatch {args.n_ubatch}, prompt {args.tokens} tokens/sequence)",
        f"{'config':38} {'nodes':>6} {'node mismatches':>16} {'offsets checked':>16} "
        f"{'offset mismatches':>18}",
    ]
    for f in fids:
        lines.append(
            f"{f.label:38} {f.nodes:>6} {len(f.graph_mismatches):>16} "
            f"{f.compute_tensors:>16} {len(f.offset_mismatches):>18}"
        )
    lines += [
        f"{summary['node_mismatches']} node and {summary['offset_mismatches']} offset "
        f"mismatches in {len(fids)} configs",
        "",
        f"Races under the multi-stream schedule ({race_note})",
        f"{'model':20} {'B':>2} {'engine hazards (by site)':34} {'decode plan alone (by site)':34}",
    ]
    for r in races:
        eng = f"{len(r.engine)} ({format_sites(r.sites('engine'))})"
        alone = f"{len(r.graph_only)} ({format_sites(r.sites('graph'))})"
        lines.append(f"{r.model:20} {r.batch:>2} {eng:34} {alone:34}")
    return Result.lines(lines, status)
