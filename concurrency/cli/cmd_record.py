"""`lace record`: on a GPU, the race experiment and the replay sweep (layers and 4-layer stacks of
the presets, decode B = 1…64, every policy, one stream against the schedule's streams), written
under `data/` (Parquet tables, measured timelines, the manifest) for machines without a GPU
(`concurrency.execute.gpu.record`). --dry-run lists the cases without a GPU.

The exit status is 1 when a plan broke what the checker demands (a safe plan that differed, an
ordered overwrite that did not corrupt every run) or a run failed, else 0.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from concurrency.cli.common import (
    ALL,
    add_format_arg,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from concurrency.cli.output import Result
from concurrency.cli.progress import Progress
from concurrency.errors import LaceError, MissingToolError

if TYPE_CHECKING:
    from concurrency.execute.gpu.record import RecordSettings


def add_arguments(p: argparse.ArgumentParser) -> None:
    from concurrency.execute.gpu import record as rec
    from concurrency.execute.gpu.launch import MATMUL_MODES, WEIGHT_DTYPES
    from concurrency.execute.gpu.race import DEFAULT_REPLAYS, WIDEN_MODES
    from concurrency.execute.gpu.race_plans import (
        DEFAULT_DELAY_US,
        DEFAULT_REPEAT,
        WIDENER_KINDS,
    )
    from concurrency.execute.gpu.record import DEFAULT_BUDGET_S, DEFAULT_RACE_BUDGET_S
    from concurrency.memory.policies import POLICIES

    p.description = (
        "On a GPU: the race experiment (unsafe plans replayed many times against a safe "
        "reference) and the replay sweep (one stream against the schedule's streams, every "
        "policy), written under --out as Parquet tables, measured timelines and manifest "
        "entries. --dry-run lists the cases without a GPU. Exit status 1 when a plan broke "
        "what the checker demands or a run failed."
    )
    sweep = p.add_argument_group("the replay sweep")
    sweep.add_argument("--models", nargs="+", default=list(rec.DEFAULT_MODELS), metavar="MODEL")
    sweep.add_argument(
        "--layer-kinds",
        nargs="+",
        choices=("gdn", "attn", "stack"),
        default=list(rec.DEFAULT_LAYER_KINDS),
        metavar="KIND",
        help="gdn, attn, stack (default: all three)",
    )
    sweep.add_argument("--stack-layers", type=positive_int, default=4, help="layers per stack")
    sweep.add_argument(
        "--batches", nargs="+", type=positive_int, default=list(rec.DEFAULT_BATCHES), metavar="B"
    )
    sweep.add_argument(
        "--policies",
        nargs="+",
        choices=[*POLICIES, ALL],
        default=[ALL],
        metavar="POLICY",
        help=f"multi-stream plans to time: {', '.join(POLICIES)} or {ALL} (default); the "
        "one-stream run is always sequential",
    )
    sweep.add_argument(
        "--timeline-batches",
        nargs="*",
        type=positive_int,
        default=list(rec.DEFAULT_TIMELINE_BATCHES),
        metavar="B",
        help="batches that also get measured CUPTI timelines (one stream and happens_before)",
    )
    sweep.add_argument("--rounds", type=positive_int, default=5, help="alternating rounds")
    sweep.add_argument(
        "--per-round", type=positive_int, default=20, help="replays per run and round"
    )
    sweep.add_argument(
        "--budget-s",
        type=positive_float,
        default=DEFAULT_BUDGET_S,
        help="start no new graph of the sweep after this many seconds "
        f"(default {DEFAULT_BUDGET_S:g})",
    )
    race = p.add_argument_group("the race experiment")
    race.add_argument("--race-models", nargs="+", default=["qwen3.5-27b"], metavar="MODEL")
    race.add_argument(
        "--race-layer-kinds",
        nargs="+",
        choices=("gdn", "attn", "stack"),
        default=list(rec.DEFAULT_LAYER_KINDS),
        metavar="KIND",
    )
    race.add_argument(
        "--race-batches",
        nargs="+",
        type=positive_int,
        default=list(rec.DEFAULT_RACE_BATCHES),
        metavar="B",
    )
    race.add_argument(
        "--race-replays",
        type=positive_int,
        default=DEFAULT_REPLAYS,
        help=f"replays per plan (default {DEFAULT_REPLAYS})",
    )
    race.add_argument(
        "--race-budget-s",
        type=positive_float,
        default=DEFAULT_RACE_BUDGET_S,
        help=f"start no new plan after this many seconds (default {DEFAULT_RACE_BUDGET_S:g})",
    )
    race.add_argument(
        "--widen",
        choices=WIDEN_MODES,
        default="auto",
        help="auto: replay a racy plan again with a widener where its race did not show",
    )
    race.add_argument("--widener", choices=WIDENER_KINDS, default="delay")
    race.add_argument(
        "--delay-us",
        type=non_negative_float,
        default=DEFAULT_DELAY_US,
        help="the delay widener's least spin (it is at least 1.5 replays long)",
    )
    race.add_argument(
        "--repeat", type=positive_int, default=DEFAULT_REPEAT, help="extra runs (repeat widener)"
    )
    race.add_argument(
        "--no-float64",
        action="store_true",
        help="skip the float64 check of the reference run",
    )
    both = p.add_argument_group("both")
    both.add_argument(
        "--stages",
        nargs="+",
        choices=("race", "replays"),
        default=["race", "replays"],
        metavar="STAGE",
        help="race, replays (default: both)",
    )
    both.add_argument("--weights", choices=WEIGHT_DTYPES, default="bf16")
    both.add_argument("--matmul", choices=MATMUL_MODES, default="auto")
    both.add_argument("--n-ctx", type=positive_int, default=512)
    both.add_argument("--seed", type=non_negative_int, default=0)
    both.add_argument(
        "--out", type=Path, default=Path("data"), help="the data folder (default: data)"
    )
    both.add_argument("--report", type=Path, default=None, help="write every table here")
    both.add_argument("--dry-run", action="store_true", help="list the cases; no GPU needed")
    add_format_arg(p)


def settings_from_args(args: argparse.Namespace) -> RecordSettings:
    from concurrency.execute.gpu.race import RaceSettings
    from concurrency.execute.gpu.record import RecordSettings
    from concurrency.graph.config import get_config
    from concurrency.memory.policies import POLICIES

    for model in {*args.models, *args.race_models}:
        get_config(model)  # an unknown preset is one line now, not after minutes on a GPU
    policies = tuple(POLICIES) if ALL in args.policies else tuple(dict.fromkeys(args.policies))
    return RecordSettings(
        models=tuple(args.models),
        layer_kinds=tuple(args.layer_kinds),
        stack_layers=args.stack_layers,
        batches=tuple(args.batches),
        policies=policies,
        timeline_batches=tuple(args.timeline_batches),
        weights=args.weights,
        matmul=args.matmul,
        n_ctx=args.n_ctx,
        rounds=args.rounds,
        per_round=args.per_round,
        budget_s=args.budget_s,
        seed=args.seed,
        stages=tuple(args.stages),
        race_models=tuple(args.race_models),
        race_layer_kinds=tuple(args.race_layer_kinds),
        race_batches=tuple(args.race_batches),
        race=RaceSettings(
            replays=args.race_replays,
            widen=args.widen,
            widener=args.widener,
            delay_us=args.delay_us,
            repeat=args.repeat,
            seed=args.seed,
            float64=not args.no_float64,
        ),
        race_budget_s=args.race_budget_s,
    )


def command_line(args: argparse.Namespace) -> str:
    """The command with every effective option (what the manifest records)."""
    words = ["lace", "record"]
    for name in (
        "models",
        "layer_kinds",
        "stack_layers",
        "batches",
        "policies",
        "timeline_batches",
        "rounds",
        "per_round",
        "budget_s",
        "race_models",
        "race_layer_kinds",
        "race_batches",
        "race_replays",
        "race_budget_s",
        "widen",
        "widener",
        "delay_us",
        "repeat",
        "stages",
        "weights",
        "matmul",
        "n_ctx",
        "seed",
    ):
        value = getattr(args, name)
        values = value if isinstance(value, list) else [value]
        words += [f"--{name.replace('_', '-')}", *(str(v) for v in values)]
    if args.no_float64:
        words.append("--no-float64")
    return shlex.join(words)


def run(args: argparse.Namespace, progress: Progress) -> Result:
    from concurrency.execute.gpu.record import plan_summary

    settings = settings_from_args(args)
    if args.dry_run:
        doc = plan_summary(settings)
        if args.format == "json":
            return Result.json(doc)
        return Result.lines(
            [
                f"race experiment: {len(doc['race_cases'])} case(s) × every plan × "
                f"{doc['race_replays']} replays (budget {doc['budget_s']['race']:g} s)",
                *(f"  {c}" for c in doc["race_cases"]),
                f"replay sweep: {len(doc['groups'])} graph(s), {doc['runs']} run(s) × "
                f"{doc['replays_per_run']} replays, {doc['timelines']} timeline(s) "
                f"(budget {doc['budget_s']['replays']:g} s)",
                *(f"  {g}" for g in doc["groups"]),
            ]
        )
    return _record(args, settings, progress)


def _record(args: argparse.Namespace, settings: RecordSettings, progress: Progress) -> Result:
    from concurrency.execute.gpu import backend
    from concurrency.execute.gpu.record import record
    from concurrency.execute.gpu.record_text import full_report, summary_lines

    try:
        backend.cupy()
    except MissingToolError as exc:
        raise MissingToolError(
            f"lace record runs on a GPU: {exc}; `lace record --dry-run` lists its cases and "
            "`lace bench --from-data` prints recordings made elsewhere"
        ) from None
    if args.out.exists() and not args.out.is_dir():
        raise LaceError(f"--out {args.out} is a file; give the data folder")
    log: list[str] = []

    def say(text: str) -> None:
        log.append(text)
        progress.update(text)

    rec = record(settings, args.out, command_line(args), say=say, meter=progress.meter)
    if args.report is not None:
        args.report.write_text(
            "\n".join([*full_report(rec), "", "== log", *log]) + "\n", encoding="utf-8"
        )
    failed = any(r["verdict"] == "FAIL" or r["status"] == "error" for r in rec.race_rows) or any(
        r["status"] == "error" for r in rec.replay_rows
    )
    status = 1 if failed else 0
    if args.format == "json":
        return Result.json(
            {
                "environment": dict(rec.env),
                "date": rec.date,
                "command": rec.command,
                "folder": str(rec.folder / rec.name),
                "files": rec.files,
                "race": rec.race_rows,
                "replays": rec.replay_rows,
                "notes": rec.notes,
            },
            status,
        )
    return Result.lines(summary_lines(rec), status)
