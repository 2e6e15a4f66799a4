"""LACE's graph against the node list the running engine computed (op by op).

The op mapping is one to one and the identity: LACE records ggml's op names. Names differ
(llama.cpp repeats names such as `norm-0` and leaves many nodes unnamed), so nodes are matched
by position and source edges by the position of the node a source name refers to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from concurrency.graph.config import ModelConfig
from concurrency.graph.ir import Graph

CPU_ALIGNMENT = 32  # ggml's CPU buffer type, the backend the probe runs


@dataclass(frozen=True)
class NodeMismatch:
    index: int
    lace: str
    engine: str
    what: str


def _as_dict(node: object) -> Mapping[str, object]:
    if isinstance(node, Mapping):
        return node
    return dataclasses.asdict(node)  # type: ignore[call-overload]


def compare_nodes(graph: Graph, engine: Sequence[object]) -> list[NodeMismatch]:
    """Every difference in op, shape, source count and source edges (and view offset for
    views), node by node; an empty list means the graphs are the same. Engine nodes are
    mappings (a dump's JSON) or dataclasses with the same fields."""
    engine = [_as_dict(e) for e in engine]
    out: list[NodeMismatch] = []
    if len(graph.nodes) != len(engine):
        out.append(NodeMismatch(-1, str(len(graph.nodes)), str(len(engine)), "node count"))
    seen: dict[str, set[int]] = {}
    for i, (name, e) in enumerate(zip(graph.nodes, engine, strict=False)):
        t = graph[name]
        ename = str(e["name"])
        srcs = [str(s) for s in e["srcs"]]  # type: ignore[attr-defined]
        if t.op != e["op"]:
            out.append(NodeMismatch(i, name, ename, f"op {t.op} vs {e['op']}"))
        if list(t.shape) != list(e["ne"]):  # type: ignore[call-overload]
            out.append(NodeMismatch(i, name, ename, f"shape {list(t.shape)} vs {e['ne']}"))
        if len(t.srcs) != len(srcs):
            out.append(NodeMismatch(i, name, ename, f"{len(t.srcs)} vs {len(srcs)} sources"))
        for s, es in zip(t.srcs, srcs, strict=False):
            want = seen.get(es, {-1})
            got = graph.index.get(s, -1)
            if got not in want:
                out.append(NodeMismatch(i, name, ename, f"source {s} (node {got}) vs {es}"))
        offs = e.get("view_offs")
        if e.get("view_src") is not None and t.view_src is not None and t.view_offset_bytes != offs:
            out.append(NodeMismatch(i, name, ename, f"view offset {t.view_offset_bytes} vs {offs}"))
        seen.setdefault(ename, set()).add(i)
    return out


def compare_offsets(
    graph: Graph, plan_address: Callable[[str], int | None], engine: Sequence[object]
) -> list[NodeMismatch]:
    """Nodes in the engine's compute buffer (buffer_usage 2) whose offset differs from the one
    `plan_address` gives the matching LACE node."""
    out = []
    for i, (name, raw) in enumerate(zip(graph.nodes, engine, strict=False)):
        e = _as_dict(raw)
        if e.get("buffer_usage") != 2:
            continue
        got = plan_address(name)
        if got != e["offset"]:
            out.append(NodeMismatch(i, name, str(e["name"]), f"offset {got} vs {e['offset']}"))
    return out


@dataclass(frozen=True)
class EngineFidelity:
    """One configuration probed in the running engine, compared with LACE."""

    label: str
    nodes: int
    graph_mismatches: tuple[NodeMismatch, ...]  # prompt and decode steps
    offset_mismatches: tuple[NodeMismatch, ...]  # engine-faithful sequential vs the engine
    compute_tensors: int

    def row(self) -> dict[str, object]:
        return {
            "config": self.label,
            "nodes": self.nodes,
            "node mismatches": len(self.graph_mismatches),
            "compute-buffer tensors": self.compute_tensors,
            "offset mismatches": len(self.offset_mismatches),
        }


def engine_fidelity(run: object, cfg: ModelConfig, label: str = "") -> EngineFidelity:
    """Compare a probe's `EngineRun` (prompt and decode steps) with LACE's graphs and with
    LACE's engine-faithful `sequential` offsets (one engine context for both steps, at the
    run's n_ctx and n_ubatch, CPU alignment 32)."""
    from concurrency.graph.branches import detect_branches
    from concurrency.graph.builders import build_graph
    from concurrency.graph.schedule import stream_schedule
    from concurrency.memory.engine_flow import EngineFlow

    batch, tokens = run.batch, run.prompt_tokens  # type: ignore[attr-defined]
    n_ctx, n_ubatch = run.n_ctx, run.n_ubatch  # type: ignore[attr-defined]
    flow = EngineFlow(cfg, "stack", None, batch, n_ctx=n_ctx, n_ubatch=n_ubatch)
    graph_bad: list[NodeMismatch] = []
    offset_bad: list[NodeMismatch] = []
    compute = 0
    steps = (("prefill", tokens, 0, run.prompt), ("decode", None, tokens, run.decode))  # type: ignore[attr-defined]
    nodes = 0
    for mode, t, kv, engine in steps:
        g = build_graph(cfg, "stack", mode, batch, t, n_ctx=n_ctx, kv_tokens=kv)
        nodes = len(g.nodes)
        graph_bad += compare_nodes(g, engine)
        rep = detect_branches(g)
        plan = flow.plan(g, stream_schedule(g, rep), rep, "sequential", CPU_ALIGNMENT).plan
        offset_bad += compare_offsets(g, lambda n, g=g, plan=plan: plan.address(g, n), engine)
        compute += sum(1 for e in engine if _as_dict(e).get("buffer_usage") == 2)
    return EngineFidelity(
        label or f"{cfg.name} B={batch} T={tokens}",
        nodes,
        tuple(graph_bad),
        tuple(offset_bad),
        compute,
    )
