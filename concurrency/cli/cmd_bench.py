"""`lace bench`: per graph and batch, CUDA-graph replay time on one stream against the
schedule's streams (median of many replays timed with CUDA events, the runs alternating over
rounds), the speedup, the achieved bandwidth and the ratio to the HBM floor. On a GPU it
measures; `--from-data [DIR]` prints the same table from recordings (`lace record`) without one.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from concurrency.cli.common import ALL, add_format_arg, positive_int
from concurrency.cli.output import Result
from concurrency.cli.progress import Progress
from concurrency.errors import LaceError, MissingToolError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from concurrency.data import default_folder
    from concurrency.execute.gpu.launch import MATMUL_MODES, WEIGHT_DTYPES
    from concurrency.memory.policies import POLICIES

    p.description = (
        "One stream against the schedule's streams: CUDA-graph replay medians, speedup, "
        "achieved bandwidth and the ratio to the HBM floor, measured on this GPU, or read "
        "from recordings with --from-data (no GPU needed)."
    )
    p.add_argument(
        "--from-data",
        nargs="?",
        type=Path,
        const=default_folder(),
        default=None,
        metavar="DIR",
        help=f"print the table from the recordings under DIR (default {default_folder()})",
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="MODEL",
        help="presets (default: qwen3.5-27b; with --from-data: every recorded one)",
    )
    p.add_argument(
        "--layer-kinds",
        nargs="+",
        choices=("gdn", "attn", "stack"),
        default=None,
        metavar="KIND",
        help="gdn, attn, stack (default: gdn; with --from-data: every recorded one)",
    )
    p.add_argument("--stack-layers", type=positive_int, default=4)
    p.add_argument(
        "--batches",
        nargs="+",
        type=positive_int,
        default=None,
        metavar="B",
        help="batches (default: 1; with --from-data: every recorded one)",
    )
    p.add_argument(
        "--policies",
        nargs="+",
        choices=[*POLICIES, ALL],
        default=["happens_before"],
        metavar="POLICY",
        help="the multi-stream plans (default happens_before; the one-stream run is "
        f"sequential); {ALL} for every policy",
    )
    p.add_argument(
        "--peers",
        action="store_true",
        help="the peers instead: LACE's GDN core and layer, flash-linear-attention, a PyTorch + "
        "fla layer, ggml-cuda's GATED_DELTA_NET and llama.cpp end to end, measured in one run "
        "(on a GPU: builds llama.cpp from --llama-src) or read with --from-data",
    )
    p.add_argument(
        "--llama-src",
        type=Path,
        default=Path(".llama-src"),
        help="with --peers on a GPU: the trimmed llama.cpp source (scripts/peers/README.md)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("peers-out"),
        help="with --peers on a GPU: where the results go (peers.json, logs)",
    )
    p.add_argument("--weights", choices=WEIGHT_DTYPES, default="bf16")
    p.add_argument("--matmul", choices=MATMUL_MODES, default="auto")
    p.add_argument("--n-ctx", type=positive_int, default=512)
    p.add_argument("--rounds", type=positive_int, default=5, help="alternating rounds")
    p.add_argument("--per-round", type=positive_int, default=40, help="replays per round")
    add_format_arg(p)


def _policies(args: argparse.Namespace) -> list[str]:
    from concurrency.memory.policies import POLICIES

    return list(POLICIES) if ALL in args.policies else list(dict.fromkeys(args.policies))


def run(args: argparse.Namespace, progress: Progress) -> Result:
    from concurrency.execute.gpu.bench import BENCH_COLUMNS, bench_rows, bench_table

    if args.peers:
        return _peers(args)
    if args.from_data is not None:
        rows, heads = _from_data(args)
    else:
        rows, heads = _measure(args, progress)
    paired = bench_rows(rows, _policies(args))
    if args.format == "json":
        return Result.json({"source": heads, "rows": paired, "columns": list(BENCH_COLUMNS)})
    if not paired:
        return Result.lines([*heads, "no graph has both a one-stream and a multi-stream row"])
    return Result.lines([*heads, *bench_table(paired)])


def _peers(args: argparse.Namespace) -> Result:
    """The peers' table: from the recordings (--from-data), or measured now on this GPU."""
    import dataclasses

    from concurrency.peers.results import load_results
    from concurrency.peers.table import format_table

    if args.from_data is not None:
        from concurrency.data import peer_files

        if not args.from_data.is_dir():
            raise LaceError(f"--from-data {args.from_data} is not a folder; give the data folder")
        files = peer_files(args.from_data)
        if not files:
            raise LaceError(
                f"{args.from_data} holds no peers' results (its manifest lists none); measure "
                "them with `lace bench --peers` on a GPU"
            )
    else:
        from concurrency.execute.gpu import backend
        from concurrency.peers import device

        try:
            backend.cupy()
        except MissingToolError as exc:
            raise MissingToolError(
                f"{exc}; `lace bench --peers --from-data` prints the committed results"
            ) from None
        argv = ["--out", str(args.out), "--llama-src", str(args.llama_src)]
        if device.main(argv) != 0:
            raise LaceError(f"the peers' run failed; its logs are in {args.out}")
        files = (args.out / "peers.json",)
    loaded = [load_results(path) for path in files]
    if args.format == "json":
        return Result.json(
            [
                {"meta": dataclasses.asdict(meta), "rows": [dataclasses.asdict(r) for r in rows]}
                for meta, rows in loaded
            ]
        )
    return Result.lines(
        [line for meta, rows in loaded for line in format_table(meta, rows).splitlines()]
    )


def _from_data(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    from concurrency.data import REPLAYS, load_table

    folder = args.from_data
    if not folder.is_dir():
        raise LaceError(f"--from-data {folder} is not a folder; give the data folder")
    frame = load_table(folder, REPLAYS)
    if frame.empty:
        raise LaceError(
            f"{folder} holds no recorded replay table (its manifest lists none); record one "
            "with `lace record` on a GPU"
        )
    for column, wanted in (
        ("model", args.models),
        ("layer", args.layer_kinds),
        ("batch", args.batches),
    ):
        if wanted:
            frame = frame[frame[column].isin(wanted)]
    heads = [
        f"measured on {device}, {date} (driver {driver}, CUDA {cuda}; {file})"
        for (device, date, driver, cuda, file), _ in frame.groupby(
            ["device", "date", "driver", "cuda", "file"], sort=True
        )
    ]
    return frame.to_dict("records"), heads


def _measure(
    args: argparse.Namespace, progress: Progress
) -> tuple[list[dict[str, Any]], list[str]]:
    from concurrency.execute.gpu import backend
    from concurrency.execute.gpu.cases import MULTI, ONE
    from concurrency.execute.gpu.record import (
        ONE_STREAM_POLICY,
        RecordSettings,
        SweepGroup,
        environment,
        record_group,
    )
    from concurrency.graph.config import get_config

    try:
        backend.cupy()
    except MissingToolError as exc:
        raise MissingToolError(
            f"{exc}; `lace bench --from-data` prints the committed recordings without a GPU"
        ) from None
    models = args.models or ["qwen3.5-27b"]
    for model in models:
        get_config(model)
    settings = RecordSettings(
        models=tuple(models),
        stack_layers=args.stack_layers,
        weights=args.weights,
        matmul=args.matmul,
        n_ctx=args.n_ctx,
        rounds=args.rounds,
        per_round=args.per_round,
    )
    env = environment()
    runs = ((ONE, ONE_STREAM_POLICY), *((MULTI, p) for p in _policies(args)))
    cases = [
        settings.case(model, layer, batch)
        for model in models
        for layer in args.layer_kinds or ["gdn"]
        for batch in args.batches or [1]
    ]
    rows: list[dict[str, Any]] = []
    for case in progress.steps("timing", cases, lambda c: c.label):
        group_rows, _ = record_group(SweepGroup(case, runs, ()), settings)
        rows += [r | {"device": env["device"]} for r in group_rows]
    errors = [f"{r['policy']} {r['schedule']}: {r['error']}" for r in rows if r["error"]]
    heads = [
        f"measured now on {env['device']} (driver {env['driver']}, CUDA {env['cuda']}), "
        f"{args.rounds} rounds × {args.per_round} replays per run, {args.weights} weights",
        *(f"FAILED {e[:200]}" for e in errors),
    ]
    return rows, heads
