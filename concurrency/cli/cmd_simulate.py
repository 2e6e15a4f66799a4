"""`lace simulate`: the predicted timeline of a graph on a GPU spec, on the multi-stream
schedule and on one stream; optionally a Chrome trace (Perfetto) of the streams."""

from __future__ import annotations

import argparse

from concurrency.cli.common import (
    ALL,
    add_format_arg,
    add_graph_args,
    add_policy_arg,
    graph_from_args,
    graph_id,
    output_file,
    policy_names,
    positive_float,
    positive_int,
    read_json_object,
)
from concurrency.cli.output import Result
from concurrency.cli.progress import Progress


def add_arguments(p: argparse.ArgumentParser) -> None:
    from concurrency.graph.schedule import DEFAULT_MAX_STREAMS
    from concurrency.timing.gpus import ALIASES, GPUS

    add_graph_args(p)
    p.add_argument(
        "--gpu",
        default="h100",
        help=f"GPU table name ({', '.join([*ALIASES, *GPUS])}) or a JSON spec file, e.g. one "
        "`lace calibrate` wrote (default: h100)",
    )
    p.add_argument(
        "--max-streams",
        type=positive_int,
        default=DEFAULT_MAX_STREAMS,
        help=f"streams including the main one (default {DEFAULT_MAX_STREAMS} as ggml)",
    )
    p.add_argument("--launch", choices=("graph", "eager"), default="graph")
    add_policy_arg(
        p,
        "happens_before",
        "memory plan behind the trace's live-bytes counter (all: one counter per policy): ",
    )
    p.add_argument(
        "--weight-bytes",
        type=positive_float,
        default=2.0,
        help="bytes per weight parameter (2 = bf16, ~0.6 = Q4_K_M)",
    )
    p.add_argument(
        "--trace",
        type=output_file,
        default=None,
        metavar="FILE",
        help="write a Chrome trace (JSON, opens in https://ui.perfetto.dev) of the streams",
    )
    add_format_arg(p)


def run(args: argparse.Namespace, progress: Progress) -> Result:
    from concurrency.timing.gpus import get_gpu, spec_from_document
    from concurrency.timing.stream_study import compare_streams

    if args.gpu.lower().endswith(".json"):
        gpu = spec_from_document(read_json_object(args.gpu, "GPU spec"), args.gpu)
    else:
        gpu = get_gpu(args.gpu)
    graph = graph_from_args(args, progress)
    progress.update(f"simulating {graph_id(graph)} on {gpu.name}: streams, then one stream")
    cmp = compare_streams(
        graph,
        gpu,
        max_streams=args.max_streams,
        launch=args.launch,
        weight_bytes_per_param=args.weight_bytes,
        detector=args.detector,
    )
    rows = cmp.rows()
    if args.trace is not None:
        _write_trace(args, graph, cmp, progress)
    if args.format == "json":
        doc = {
            "graph": graph_id(graph),
            "gpu": gpu.name,
            "launch": args.launch,
            "weight_bytes_per_param": args.weight_bytes,
            "rows": rows,
            "trace": None if args.trace is None else str(args.trace),
        }
        return Result.json(doc)
    lines = [
        f"{graph_id(graph)} on {gpu.name}, {args.launch} launches, "
        f"weights at {args.weight_bytes:g} bytes/param (simulated)",
        f"{'streams':>7} {'makespan µs':>12} {'bound µs':>9} {'concurrent µs':>13} "
        f"{'overlap':>7} {'speedup':>7} {'bound/makespan':>14}",
    ]
    for r in rows:
        lines.append(
            f"{r['streams']:>7} {r['makespan_us']:>12.1f} {r['critical_path_us']:>9.1f} "
            f"{r['concurrency_us']:>13.1f} {r['overlap_ratio']:>7.2f} {r['speedup']:>7.3f} "
            f"{r['closeness']:>14.2f}"
        )
    if args.trace is not None:
        lines.append(f"trace written to {args.trace} (open it in https://ui.perfetto.dev)")
    return Result.lines(lines)


def _write_trace(args, graph, cmp, progress: Progress) -> None:  # type: ignore[no-untyped-def]
    """The trace of the multi-stream timeline, with the live-bytes counter of --policy's plan
    (of every policy's, one counter each, for `all`)."""
    from concurrency.errors import LaceError
    from concurrency.graph.branches import detect_branches
    from concurrency.memory.policies import plan_memory
    from concurrency.timing.trace import save_trace

    report = detect_branches(graph, args.detector)
    names = policy_names(args.policy)
    plans = {
        name: plan_memory(graph, cmp.schedule, report, name)
        for name in progress.steps(f"planning memory for the trace ({len(names)})", names)
    }
    progress.update(f"writing the trace to {args.trace}")
    counters = {"plans": plans} if args.policy == ALL else {"plan": plans[args.policy]}
    try:
        save_trace(
            args.trace,
            cmp.parallel,
            schedule=cmp.schedule,
            graph=graph,
            weight_bytes_per_param=args.weight_bytes,
            **counters,
        )
    except OSError as exc:
        raise LaceError(
            f"cannot write the trace {args.trace} ({exc.strerror}); check the path"
        ) from None
