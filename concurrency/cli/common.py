"""Options and helpers shared by the `lace` commands.

Importing this module is cheap: the registries an option offers (layer kinds, detectors,
policies) are imported inside the function that adds the option, which runs only for a command
that is being parsed, and that command needs them anyway.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from concurrency.errors import LaceError, UnknownNameError

if TYPE_CHECKING:
    from concurrency.cli.progress import Progress
    from concurrency.graph.branches import BranchReport
    from concurrency.graph.ir import Graph
    from concurrency.graph.schedule import Schedule
    from concurrency.memory.compare import PolicyResult
    from concurrency.memory.engine_flow import EngineFlow

ALL = "all"


class LaceParser(argparse.ArgumentParser):
    """argparse that reports errors on one line (`lace: error: …`) and exits with status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"lace: error: {' '.join(message.split())}\n")


# ----------------------------------------------------------------------------- value types
def positive_int(text: str) -> int:
    value = _whole(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {value}")
    return value


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def non_negative_float(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def output_file(text: str) -> Path:
    """A file the command will write: its folder must exist and it must not be a folder.
    Checked when the options are parsed, before any work, so a typo costs no waiting."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text} is a folder; give a file name, e.g. {path / 'trace.json'}"
        )
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"the folder {folder} {what}; create it first")
    return path


# ----------------------------------------------------------------------------- options
def add_format_arg(
    p: argparse.ArgumentParser, choices: tuple[str, ...] = ("table", "json"), default: str = ""
) -> None:
    p.add_argument(
        "--format",
        choices=choices,
        default=default or choices[0],
        help="json: one JSON document on stdout and nothing else "
        f"(default: {default or choices[0]})",
    )


def add_model_arg(p: argparse.ArgumentParser, **kwargs: Any) -> None:
    p.add_argument(
        "--model",
        help="preset name, or a .json / .yaml / .yml config file (`lace models` lists the "
        "presets, `lace models --help` the config keys)",
        **kwargs,
    )


def add_graph_args(p: argparse.ArgumentParser) -> None:
    """The options that select a graph; shared by every command that builds one."""
    from concurrency.graph.branches import DETECTORS
    from concurrency.graph.builders import DEFAULT_PREFILL_TOKENS, LAYER_KINDS, MODES

    add_model_arg(p, required=True)
    p.add_argument("--layer", choices=LAYER_KINDS, default="gdn")
    p.add_argument(
        "--layers",
        type=positive_int,
        default=None,
        help="layers in a stack (default: all of the model's)",
    )
    p.add_argument("--mode", choices=MODES, default="decode")
    p.add_argument("--batch", type=positive_int, default=1, help="sequences (B)")
    p.add_argument(
        "--tokens",
        type=positive_int,
        default=None,
        help=f"tokens per sequence in prefill (T, default {DEFAULT_PREFILL_TOKENS})",
    )
    p.add_argument(
        "--detector",
        choices=DETECTORS,
        default="general",
        help="fork-region detector: general (LACE's) or ggml (ggml-cuda's own)",
    )


def add_policy_arg(p: argparse.ArgumentParser, default: str, what: str = "") -> None:
    """--policy NAME or --policy all (every policy, in registry order)."""
    from concurrency.memory.policies import POLICIES

    p.add_argument(
        "--policy",
        choices=[*POLICIES, ALL],
        default=default,
        metavar="POLICY",
        help=f"{what}one of {', '.join(POLICIES)}, or {ALL} (default: {default})",
    )


def add_schedule_args(p: argparse.ArgumentParser) -> None:
    """Options that turn a graph into a schedule and plans (plan, hazards, run)."""
    from concurrency.graph.schedule import DEFAULT_MAX_STREAMS
    from concurrency.memory.policies import DEFAULT_ALIGNMENT

    p.add_argument(
        "--max-streams",
        type=positive_int,
        default=DEFAULT_MAX_STREAMS,
        help=f"streams including the main one (1 = serial; default {DEFAULT_MAX_STREAMS} as ggml)",
    )
    p.add_argument(
        "--alignment",
        type=positive_int,
        default=DEFAULT_ALIGNMENT,
        help=f"buffer alignment in bytes (CUDA {DEFAULT_ALIGNMENT}, ggml's CPU 32)",
    )
    p.add_argument(
        "--flow",
        choices=("engine", "graph"),
        default=None,
        help="engine: offsets as llama.cpp places them (reserve n_ubatch-token graphs, then "
        "replay or re-plan by each policy's rule); graph: plan this graph alone. Default: "
        "engine for --layer stack (a whole llama.cpp graph), graph for single layers",
    )
    add_context_args(p)


def add_context_args(p: argparse.ArgumentParser) -> None:
    """--n-ctx and --n-ubatch: the llama.cpp context the graphs and the engine flow use."""
    from concurrency.memory.engine_flow import DEFAULT_N_CTX, DEFAULT_N_UBATCH

    p.add_argument(
        "--n-ctx",
        type=positive_int,
        default=DEFAULT_N_CTX,
        help=f"context size in tokens (KV cells, a multiple of 256 for the engine flow; "
        f"default {DEFAULT_N_CTX}, llama_context_default_params' value)",
    )
    p.add_argument(
        "--n-ubatch",
        type=positive_int,
        default=DEFAULT_N_UBATCH,
        help=f"tokens per ubatch: the engine reserves its compute buffer on an n_ubatch-token "
        f"graph (default {DEFAULT_N_UBATCH})",
    )


# ----------------------------------------------------------------------------- helpers
def policy_names(name: str) -> list[str]:
    """The policies `--policy` names: one, or every policy for `all`."""
    from concurrency.memory.policies import POLICIES

    if name == ALL:
        return list(POLICIES)
    if name not in POLICIES:
        raise UnknownNameError("policy", name, [*POLICIES, ALL])
    return [name]


def graph_from_args(args: argparse.Namespace, progress: Progress, **kwargs: Any) -> Graph:
    from concurrency.graph.builders import build_graph

    progress.update(f"building the {args.layer} graph of {args.model}")
    return build_graph(
        args.model, args.layer, args.mode, args.batch, args.tokens, args.layers, **kwargs
    )


def schedule_from_args(
    args: argparse.Namespace, progress: Progress
) -> tuple[Graph, BranchReport, Schedule]:
    """The graph (with --n-ctx), its fork regions (--detector) and its stream schedule."""
    from concurrency.graph.branches import detect_branches
    from concurrency.graph.schedule import stream_schedule

    graph = graph_from_args(args, progress, n_ctx=args.n_ctx)
    progress.update(f"finding fork regions ({args.detector} detector) and scheduling streams")
    report = detect_branches(graph, args.detector)
    schedule = stream_schedule(graph, report, args.max_streams)
    return graph, report, schedule


def flow(args: argparse.Namespace) -> str:
    """--flow, or its default: the engine's flow for whole-model graphs (as compare_policies)."""
    if args.flow is not None:
        return str(args.flow)
    return "engine" if args.layer == "stack" else "graph"


def engine_from_args(
    args: argparse.Namespace, graph: Graph, progress: Progress
) -> EngineFlow | None:
    """The engine context (built once for every policy) when the engine flow is used."""
    if flow(args) != "engine":
        return None
    from concurrency.memory.engine_flow import EngineFlow

    progress.update(f"building the engine's reserve graphs (n_ubatch {args.n_ubatch})")
    return EngineFlow.for_graph(
        graph, detector=args.detector, max_streams=args.max_streams, n_ubatch=args.n_ubatch
    )


@dataclass(frozen=True)
class Compared:
    """What `lace plan` and `lace hazards` both start from: the graph, its fork regions and
    schedule, the engine context (engine flow only) and every asked policy planned and checked."""

    graph: Graph
    report: BranchReport
    schedule: Schedule
    engine: EngineFlow | None
    results: list[PolicyResult]


def compare_from_args(args: argparse.Namespace, progress: Progress) -> Compared:
    """Build, schedule and plan every policy `--policy` names (compare_policies), with progress."""
    from concurrency.memory.compare import compare_policies

    graph, report, schedule = schedule_from_args(args, progress)
    engine = engine_from_args(args, graph, progress)
    names = policy_names(args.policy)
    results = compare_policies(
        graph,
        schedule,
        report,
        names,
        args.alignment,
        flow=flow(args),
        engine=engine,
        on_policy=progress.callback(f"planning and checking {len(names)} policies", len(names)),
    )
    return Compared(graph, report, schedule, engine, list(results))


def flow_line(args: argparse.Namespace, engine: EngineFlow | None) -> str:
    """The flow and its context settings, defaults named, for the head of a table."""
    from concurrency.memory.engine_flow import DEFAULT_N_CTX, DEFAULT_N_UBATCH

    ctx = f"n_ctx {args.n_ctx}" + (" (default)" if args.n_ctx == DEFAULT_N_CTX else "")
    if engine is None:
        return f"graph flow (this graph planned alone), {ctx}"
    ub = f"n_ubatch {args.n_ubatch}" + (" (default)" if args.n_ubatch == DEFAULT_N_UBATCH else "")
    reserves = ", ".join(r.label for r in engine.reserves)
    return f"engine flow ({ctx}, {ub}; reserves {reserves}), detector {args.detector}"


def flow_json(args: argparse.Namespace, engine: EngineFlow | None) -> dict[str, object]:
    doc: dict[str, object] = {"flow": flow(args), "n_ctx": args.n_ctx, "detector": args.detector}
    if engine is not None:
        doc |= engine.settings()
    return doc


def graph_id(graph: Graph) -> str:
    """'tiny stack×4 decode B=1': how tables and JSON name a graph."""
    from concurrency.memory.compare import graph_label

    return graph_label(graph)


def read_json_object(path: str, what: str) -> dict[str, object]:
    """A JSON file holding one object, or a LaceError naming the file and the problem."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise LaceError(f"{what} file {path} not found; check the path") from None
    except IsADirectoryError:
        raise LaceError(f"{what} file {path} is a folder; give a .json file") from None
    except OSError as exc:
        raise LaceError(f"cannot read {what} file {path} ({exc.strerror}); check it") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LaceError(f"{what} file {path} is not valid JSON ({exc}); fix it") from None
    if not isinstance(data, dict):
        raise LaceError(f"{what} file {path} must hold a JSON object")
    return data
