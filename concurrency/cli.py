"""The `lace` command line (also `python -m concurrency`).

Every subcommand prints its result on stdout (`--format json` prints only JSON) and any
problem as one line on stderr with a non-zero exit code: a bad name or value never ends in a
traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence

from concurrency.errors import LaceError, UnknownNameError
from concurrency.format import format_bytes
from concurrency.graph.branches import DETECTORS, detect_branches
from concurrency.graph.builders import LAYER_KINDS, MODES, build_graph
from concurrency.graph.config import PRESETS
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import DEFAULT_MAX_STREAMS, stream_schedule
from concurrency.memory.compare import compare_policies
from concurrency.memory.policies import DEFAULT_ALIGNMENT, POLICIES, plan_memory


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors on one line and exits with status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"lace: error: {message}\n")


def add_graph_args(p: argparse.ArgumentParser) -> None:
    """The options that select a graph; shared by every command that builds one."""
    p.add_argument(
        "--model",
        required=True,
        help="preset name (see `lace models`) or a JSON config file (*.json)",
    )
    p.add_argument("--layer", choices=LAYER_KINDS, default="gdn")
    p.add_argument(
        "--layers",
        type=_positive_int,
        default=None,
        help="layers in a stack (default: all of the model's)",
    )
    p.add_argument("--mode", choices=MODES, default="decode")
    p.add_argument("--batch", type=_positive_int, default=1, help="sequences (B)")
    p.add_argument(
        "--tokens",
        type=_positive_int,
        default=None,
        help="tokens per sequence in prefill (T, default 64)",
    )
    p.add_argument("--detector", choices=DETECTORS, default="general")


def graph_from_args(args: argparse.Namespace) -> Graph:
    return build_graph(args.model, args.layer, args.mode, args.batch, args.tokens, args.layers)


def graph_to_json(graph: Graph, detectors: Sequence[str]) -> dict[str, object]:
    """The `lace graph --format json` document: nodes in order and branches per detector."""
    return {
        "model": graph.meta.model,
        "layer": graph.meta.layer,
        "mode": graph.meta.mode,
        "batch": graph.meta.batch,
        "tokens": graph.meta.tokens,
        "layers": graph.meta.n_layers,
        "nodes": [
            {
                "index": i,
                "name": t.name,
                "ggml_name": t.ggml_name,
                "op": t.op,
                "params": [p if isinstance(p, (int, float, str)) else str(p) for p in t.params],
                "inputs": list(t.srcs),
                "output": {
                    "shape": list(t.shape),
                    "dtype": t.dtype,
                    "bytes": t.nbytes,
                    "kind": t.kind.value,
                    "view_of": t.view_src,
                },
            }
            for i, t in enumerate(graph.node_tensors())
        ],
        "branches": {d: detect_branches(graph, d).to_dict() for d in detectors},
    }


def cmd_models(args: argparse.Namespace) -> int:
    if args.format == "json":
        print(json.dumps({n: c.to_dict() for n, c in PRESETS.items()}, indent=2))
        return 0
    print(
        f"{'model':20} {'arch':10} {'layers':>6} {'n_embd':>6} {'Hk/Hv':>7} {'heads':>7}  verified"
    )
    for c in PRESETS.values():
        flag = "yes" if c.verified else "no: " + ", ".join(c.unverified_fields)
        print(
            f"{c.name:20} {c.arch:10} {c.n_layer:>6} {c.n_embd:>6} "
            f"{c.ssm_n_group:>3}/{c.ssm_dt_rank:<3} {c.n_head:>3}/{c.n_head_kv:<3}  {flag}"
        )
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    graph = graph_from_args(args)
    if args.format == "json":
        print(json.dumps(graph_to_json(graph, DETECTORS), indent=1))
        return 0
    from concurrency.render.dot import graph_dot, render_svg

    dot = graph_dot(graph, detector=args.detector, hide_views=not args.show_views)
    print(dot.source if args.format == "dot" else render_svg(dot))
    return 0


def cmd_branches(args: argparse.Namespace) -> int:
    """A readable summary of what each detector finds (text)."""
    graph = graph_from_args(args)
    total = sum(graph[n].nbytes for n in graph.nodes if not graph[n].is_view)
    print(
        f"{graph.meta.model} {graph.meta.layer} {graph.meta.mode} B={graph.meta.batch}: "
        f"{len(graph)} nodes, {format_bytes(total)} of activations"
    )
    for det in DETECTORS:
        rep = detect_branches(graph, det)
        print(f"[{det}] {len(rep.regions)} region(s)")
        for r in rep.regions:
            sizes = ", ".join(f"{b.nodes[0]}…({len(b.nodes)})→{b.join}" for b in r.branches)
            print(f"  fork {r.fork}: {sizes}")
        for x in rep.rejections:
            print(f"  rejected {x.fork}: {x.reason}")
    return 0


def add_schedule_args(p: argparse.ArgumentParser) -> None:
    """Options that turn a graph into a schedule and plans (plan, hazards, run)."""
    p.add_argument(
        "--max-streams",
        type=_positive_int,
        default=DEFAULT_MAX_STREAMS,
        help="streams including the main one (1 = serial; default 8 as ggml)",
    )
    p.add_argument(
        "--alignment",
        type=_positive_int,
        default=DEFAULT_ALIGNMENT,
        help="buffer alignment in bytes (CUDA 128, ggml's CPU 32)",
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
        type=_positive_int,
        default=DEFAULT_N_CTX,
        help=f"context size in tokens (KV cells, a multiple of 256 for the engine flow; "
        f"default {DEFAULT_N_CTX}, llama_context_default_params' value)",
    )
    p.add_argument(
        "--n-ubatch",
        type=_positive_int,
        default=DEFAULT_N_UBATCH,
        help=f"tokens per ubatch: the engine reserves its compute buffer on an n_ubatch-token "
        f"graph (default {DEFAULT_N_UBATCH})",
    )


def _schedule_from_args(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    graph = build_graph(
        args.model, args.layer, args.mode, args.batch, args.tokens, args.layers, n_ctx=args.n_ctx
    )
    report = detect_branches(graph, args.detector)
    schedule = stream_schedule(graph, report, args.max_streams)
    return graph, report, schedule


def _engine_from_args(args: argparse.Namespace, graph: Graph):  # type: ignore[no-untyped-def]
    """The engine context (built once for every policy) when the engine flow is used."""
    if _flow(args) != "engine":
        return None
    from concurrency.memory.engine_flow import EngineFlow

    return EngineFlow.for_graph(
        graph, detector=args.detector, max_streams=args.max_streams, n_ubatch=args.n_ubatch
    )


def _flow_line(args: argparse.Namespace, engine) -> str:  # type: ignore[no-untyped-def]
    """The flow and its context settings, defaults named, for the head of a table."""
    from concurrency.memory.engine_flow import DEFAULT_N_CTX, DEFAULT_N_UBATCH

    ctx = f"n_ctx {args.n_ctx}" + (" (default)" if args.n_ctx == DEFAULT_N_CTX else "")
    if engine is None:
        return f"graph flow (this graph planned alone), {ctx}"
    ub = f"n_ubatch {args.n_ubatch}" + (" (default)" if args.n_ubatch == DEFAULT_N_UBATCH else "")
    reserves = ", ".join(r.label for r in engine.reserves)
    return f"engine flow ({ctx}, {ub}; reserves {reserves}), detector {args.detector}"


def _flow_json(args: argparse.Namespace, engine) -> dict[str, object]:  # type: ignore[no-untyped-def]
    doc: dict[str, object] = {"flow": _flow(args), "n_ctx": args.n_ctx, "detector": args.detector}
    if engine is not None:
        doc |= engine.settings()
    return doc


def _flow(args: argparse.Namespace) -> str:
    """--flow, or its default: the engine's flow for whole-model graphs (as compare_policies)."""
    if args.flow is not None:
        return str(args.flow)
    return "engine" if args.layer == "stack" else "graph"


def _policies(name: str) -> list[str]:
    if name == "all":
        return list(POLICIES)
    if name not in POLICIES:
        raise UnknownNameError("policy", name, [*POLICIES, "all"])
    return [name]


def cmd_plan(args: argparse.Namespace) -> int:
    from concurrency.memory.sites import format_sites

    graph, report, schedule = _schedule_from_args(args)
    engine = _engine_from_args(args, graph)
    results = compare_policies(
        graph,
        schedule,
        report,
        _policies(args.policy),
        args.alignment,
        flow=_flow(args),
        engine=engine,
    )
    rows = [r.row() for r in results]
    if args.format == "json":
        doc = {"graph": _graph_id(graph), "streams": schedule.n_streams, **_flow_json(args, engine)}
        print(json.dumps({**doc, "policies": rows}, indent=1))
        return 0
    print(f"{_graph_id(graph)}, {schedule.n_streams} stream(s); {_flow_line(args, engine)}")
    if engine is not None:
        print(
            "arena and bound: of the graph each plan was made for ('plan of'); hazards: of the "
            "live graph with the offsets it runs with"
        )
    w = max(len(r.policy) for r in results)
    print(
        f"{'policy':{w}} {'plan of':14} {'arena':>10} {'bound':>10} {'bound/arena':>11} "
        f"{'buffer':>10} {'hazards':>7}  {'by site':18} {'ms':>7}"
    )
    for r in results:
        print(
            f"{r.policy:{w}} {r.planned_graph:14} {format_bytes(r.arena_bytes):>10} "
            f"{format_bytes(r.lower_bound_bytes):>10} {r.efficiency:>11.3f} "
            f"{format_bytes(r.buffer_bytes):>10} {len(r.hazards):>7}  "
            f"{format_sites(r.sites):18} {r.planning_ms:>7.1f}"
        )
    if engine is not None:
        print("where each plan comes from:")
        for r in results:
            print(f"  {r.policy}: {r.source}")
    return 0


def cmd_hazards(args: argparse.Namespace) -> int:
    from concurrency.memory.sites import SiteMap, format_sites

    graph, report, schedule = _schedule_from_args(args)
    engine = _engine_from_args(args, graph)
    (result,) = compare_policies(
        graph, schedule, report, [args.policy], args.alignment, flow=_flow(args), engine=engine
    )
    sites = SiteMap(graph, report)
    if args.format == "json":
        doc = {
            "graph": _graph_id(graph),
            "policy": args.policy,
            "streams": schedule.n_streams,
            **_flow_json(args, engine),
            "planned_graph": result.planned_graph,
            "plan_source": result.source,
            "hazards_by_site": dict(result.sites),
            "hazards": [
                {**dataclasses.asdict(h), "site": sites.hazard_site(h)} for h in result.hazards
            ],
        }
        print(json.dumps(doc, indent=1))
        return 0
    print(
        f"{_graph_id(graph)}, policy {args.policy}, {schedule.n_streams} stream(s): "
        f"{len(result.hazards)} hazard(s) ({format_sites(result.sites)})"
    )
    print(f"{_flow_line(args, engine)}; offsets: {result.source}")
    for h in result.hazards[: args.limit]:
        print(f"  [{h.kind}, {sites.hazard_site(h)}] {h.explanation}")
    if len(result.hazards) > args.limit:
        print(f"  … {len(result.hazards) - args.limit} more (raise --limit)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Execute the graph on the CPU in each policy's arena and compare with float64."""
    from concurrency.execute.numpy_arena import compare_runs

    graph, report, schedule = _schedule_from_args(args)
    engine = _engine_from_args(args, graph)
    seeds = range(args.seed, args.seed + args.seeds)
    rows = []
    for name in _policies(args.policy):
        if engine is not None:
            placed = engine.plan(graph, schedule, report, name, args.alignment)
            plan, source = placed.plan, placed.source
        else:
            plan = plan_memory(graph, schedule, report, name, args.alignment)
            source = "planned on this graph"
        for r in compare_runs(graph, schedule, plan, seeds, input_seed=args.seed):
            rows.append(
                {
                    "policy": name,
                    "plan_source": source,
                    "seed": r.seed,
                    "max_rel_error": r.error,
                    "matches": r.ok(args.tolerance),
                }
            )
    if args.format == "json":
        print(
            json.dumps(
                {
                    "graph": _graph_id(graph),
                    "streams": schedule.n_streams,
                    **_flow_json(args, engine),
                    "tolerance": args.tolerance,
                    "runs": rows,
                },
                indent=1,
            )
        )
        return 0
    print(
        f"{_graph_id(graph)}, {schedule.n_streams} stream(s), numpy backend, "
        f"float32 arena vs float64 reference (tolerance {args.tolerance:g})"
    )
    print(_flow_line(args, engine))
    if engine is not None:
        for name, source in dict.fromkeys((r["policy"], r["plan_source"]) for r in rows):
            print(f"  {name}: {source}")
    w = max(len(str(r["policy"])) for r in rows)
    print(f"{'policy':{w}} {'seed':>5} {'max rel error':>14}  verdict")
    for r in rows:
        verdict = "matches" if r["matches"] else "WRONG (race)"
        print(f"{r['policy']:{w}} {r['seed']:>5} {r['max_rel_error']:>14.3e}  {verdict}")
    return 0


def cmd_fidelity(args: argparse.Namespace) -> int:
    """LACE's plans against ggml-alloc's own, per graph and policy (or, with --engine,
    against the running engine)."""
    if args.engine:
        return _engine_fidelity(args)
    from concurrency.oracle.fidelity import fidelity_table, preset_cases
    from concurrency.oracle.ggml_lib import Ggml

    ggml = Ggml.load()
    models = args.models or list(ORACLE_MODELS)
    rows = fidelity_table(ggml, preset_cases(models, args.batches), args.detector)
    if args.format == "json":
        print(json.dumps([r.row() for r in rows], indent=1))
    else:
        print(f"{'graph':42} {'policy':11} {'LACE bytes':>12} {'ggml bytes':>12}  offsets equal?")
        for r in rows:
            print(
                f"{r.graph:42} {r.policy:11} {r.lace_bytes:>12} {r.ggml_bytes:>12}  "
                f"{'yes' if r.equal else f'NO ({len(r.mismatched)} differ)'}"
            )
        same = sum(r.equal for r in rows)
        print(f"{same} of {len(rows)} plans identical to ggml-alloc's")
    return 0 if all(r.equal for r in rows) else 1


ENGINE_MODELS = ("tiny", "qwen3.5-27b", "qwen3.5-35b-a3b", "qwen3-next-80b-a3b")
ORACLE_MODELS = ("tiny", "qwen3.5-0.8b", "qwen3.5-27b")


def _engine_fidelity(args: argparse.Namespace) -> int:
    """Two tables: LACE's graphs and offsets against the engine's, for scaled-down configs;
    the races the engine's own offsets produce under the seed's schedule, per preset. A run
    that cannot probe the engine (no llama-cpp-python) fails with the reason."""
    from concurrency.graph.config import get_config, scaled_down
    from concurrency.memory.engine_hazards import engine_hazard_table
    from concurrency.memory.sites import format_sites
    from concurrency.oracle.engine import llama_version, probe
    from concurrency.oracle.engine_compare import CPU_ALIGNMENT, engine_fidelity

    models = args.models or list(ENGINE_MODELS)
    version = llama_version()  # no llama-cpp-python: a MissingToolError naming the fix
    fids = [
        engine_fidelity(probe(cfg, b, args.tokens, n_ubatch=args.n_ubatch, n_ctx=args.n_ctx), cfg)
        for cfg in (scaled_down(get_config(name)) for name in models)
        for b in args.batches
    ]
    races = engine_hazard_table(models, args.batches, n_ctx=args.n_ctx, n_ubatch=args.n_ubatch)
    ok = all(not f.graph_mismatches and not f.offset_mismatches for f in fids)
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
        print(json.dumps(doc, indent=1))
        return 0 if ok else 1
    print(
        f"LACE vs the running engine (llama-cpp-python {version}, random-weight GGUF, CPU, "
        f"n_ctx {args.n_ctx}, n_ubatch {args.n_ubatch}, prompt {args.tokens} tokens/sequence)"
    )
    print(
        f"{'config':38} {'nodes':>6} {'node mismatches':>16} {'offsets checked':>16} "
        f"{'offset mismatches':>18}"
    )
    for f in fids:
        print(
            f"{f.label:38} {f.nodes:>6} {len(f.graph_mismatches):>16} "
            f"{f.compute_tensors:>16} {len(f.offset_mismatches):>18}"
        )
    print(
        f"{summary['node_mismatches']} node and {summary['offset_mismatches']} offset "
        f"mismatches in {len(fids)} configs"
    )
    print()
    print(f"Races under the multi-stream schedule ({race_note})")
    print(
        f"{'model':20} {'B':>2} {'engine hazards (by site)':34} {'decode plan alone (by site)':34}"
    )
    for r in races:
        eng = f"{len(r.engine)} ({format_sites(r.sites('engine'))})"
        alone = f"{len(r.graph_only)} ({format_sites(r.sites('graph'))})"
        print(f"{r.model:20} {r.batch:>2} {eng:34} {alone:34}")
    return 0 if ok else 1


def cmd_simulate(args: argparse.Namespace) -> int:
    """Simulate the graph on a GPU spec with the given streams and with one; print both."""
    from concurrency.timing.gpus import GpuSpec, get_gpu
    from concurrency.timing.stream_study import compare_streams

    if args.gpu.lower().endswith(".json"):
        gpu = GpuSpec.from_dict(_read_json(args.gpu, "GPU spec"))
    else:
        gpu = get_gpu(args.gpu)
    graph = graph_from_args(args)
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
        from concurrency.timing.trace import save_trace

        report = detect_branches(graph, args.detector)
        plan = plan_memory(graph, cmp.schedule, report, args.policy)
        save_trace(args.trace, cmp.parallel, schedule=cmp.schedule, plan=plan, graph=graph)
    if args.format == "json":
        doc = {
            "graph": _graph_id(graph),
            "gpu": gpu.name,
            "launch": args.launch,
            "weight_bytes_per_param": args.weight_bytes,
            "rows": rows,
        }
        print(json.dumps(doc, indent=1))
        return 0
    print(
        f"{_graph_id(graph)} on {gpu.name}, {args.launch} launches, "
        f"weights at {args.weight_bytes:g} bytes/param (simulated)"
    )
    print(
        f"{'streams':>7} {'makespan µs':>12} {'bound µs':>9} {'concurrent µs':>13} "
        f"{'overlap':>7} {'speedup':>7} {'bound/makespan':>14}"
    )
    for r in rows:
        print(
            f"{r['streams']:>7} {r['makespan_us']:>12.1f} {r['critical_path_us']:>9.1f} "
            f"{r['concurrency_us']:>13.1f} {r['overlap_ratio']:>7.2f} {r['speedup']:>7.3f} "
            f"{r['closeness']:>14.2f}"
        )
    if args.trace is not None:
        print(f"trace written to {args.trace} (open it in https://ui.perfetto.dev)")
    return 0


def _read_json(path: str, what: str) -> dict[str, object]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise LaceError(f"{what} file {path} not found; check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LaceError(f"{what} file {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise LaceError(f"{what} file {path} must hold a JSON object")
    return data


def _graph_id(graph: Graph) -> str:
    from concurrency.memory.compare import graph_label

    return graph_label(graph)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lace", description="LACE, the Linear-Attention Concurrency Explorer")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("models", help="list the model presets")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("graph", help="build a layer graph: JSON, DOT or SVG")
    add_graph_args(p)
    p.add_argument("--format", choices=("json", "dot", "svg"), default="json")
    p.add_argument("--show-views", action="store_true", help="draw view/reshape nodes too")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("branches", help="summarise the fork regions each detector finds")
    add_graph_args(p)
    p.set_defaults(func=cmd_branches)

    p = sub.add_parser("plan", help="plan memory under allocator policies and check hazards")
    add_graph_args(p)
    add_schedule_args(p)
    p.add_argument("--policy", default="all", help=f"one of {', '.join(POLICIES)}, or all")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "hazards", help="list the hazards (races, uses after reuse) of one policy's plan"
    )
    add_graph_args(p)
    add_schedule_args(p)
    p.add_argument("--policy", choices=list(POLICIES), default="sequential")
    p.add_argument("--limit", type=_positive_int, default=20, help="hazards printed (table)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_hazards)

    p = sub.add_parser("run", help="execute a plan on the CPU and compare with float64")
    add_graph_args(p)
    add_schedule_args(p)
    p.add_argument(
        "--backend",
        choices=("numpy",),
        default="numpy",
        help="numpy: CPU, float32 inside the planned arena",
    )
    p.add_argument("--policy", default="sequential", help=f"one of {', '.join(POLICIES)}, or all")
    p.add_argument(
        "--seed",
        type=_non_negative_int,
        default=0,
        help="seed of the inputs and of the first execution order",
    )
    p.add_argument("--seeds", type=_positive_int, default=1, help="execution orders to try")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max relative error allowed")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("fidelity", help="compare LACE's plans with ggml-alloc itself")
    p.add_argument(
        "--models",
        nargs="+",
        default=None,
        help=f"presets (default {' '.join(ORACLE_MODELS)}; with --engine "
        f"{' '.join(ENGINE_MODELS)}, scaled down)",
    )
    p.add_argument("--batches", nargs="+", type=_positive_int, default=[1, 4])
    p.add_argument(
        "--detector",
        choices=DETECTORS,
        default="ggml",
        help="regions for interleave and alloc_dep (default: ggml-cuda's own)",
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument(
        "--engine",
        action="store_true",
        help="compare with the running llama.cpp instead: graphs, offsets, races",
    )
    p.add_argument(
        "--tokens", type=_positive_int, default=8, help="prompt tokens per sequence (--engine)"
    )
    add_context_args(p)
    p.set_defaults(func=cmd_fidelity)

    p = sub.add_parser("simulate", help="predict a timeline on a GPU spec: streams vs one")
    add_graph_args(p)
    p.add_argument(
        "--gpu",
        default="h100",
        help="GPU table name (h100, h200, rtx5090, rtx4090, a100, l40s) or a JSON spec file",
    )
    p.add_argument(
        "--max-streams",
        type=_positive_int,
        default=DEFAULT_MAX_STREAMS,
        help="streams including the main one (default 8 as ggml)",
    )
    p.add_argument("--launch", choices=("graph", "eager"), default="graph")
    p.add_argument(
        "--policy",
        choices=list(POLICIES),
        default="happens_before",
        help="memory plan behind the trace's live-bytes counter",
    )
    p.add_argument(
        "--weight-bytes",
        type=float,
        default=2.0,
        help="bytes per weight parameter (2 = bf16, ~0.6 = Q4_K_M)",
    )
    p.add_argument("--trace", default=None, help="write a Chrome trace (JSON) of the streams")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_simulate)

    try:
        from concurrency.report import add_report_parser
    except ImportError:  # the report needs the notebook packages
        pass
    else:
        add_report_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except LaceError as exc:
        print(f"lace: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
