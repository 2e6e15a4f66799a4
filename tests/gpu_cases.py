"""Graphs, plans and inputs shared by the GPU tests (imports no CuPy).

`op_graph` builds one-op graphs through the same GraphContext the model builders use, so a
kernel test runs the op exactly as a layer would (ggml shapes, views, strides), through the
launch plan, the arena and the runner, against `reference_run` in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.builders.context import GraphContext
from concurrency.graph.config import ModelConfig, get_config, scaled_down
from concurrency.graph.ir import Graph, GraphMeta, TensorKind
from concurrency.graph.schedule import Schedule, serial_schedule, stream_schedule
from concurrency.memory.plan import MemoryPlan
from concurrency.memory.policies import plan_memory

CONFIGS: Mapping[str, ModelConfig] = {
    "tiny": get_config("tiny"),
    "27b-scaled": scaled_down(get_config("qwen3.5-27b")),
    "moe-scaled": scaled_down(get_config("qwen3.5-35b-a3b")),
    "next-scaled": scaled_down(get_config("qwen3-next-80b-a3b")),
}
N_CTX = 512


def layer_graph(
    model: str, layer: str, mode: str, batch: int, tokens: int | None = None, kv_tokens: int = 0
) -> Graph:
    return build_graph(
        CONFIGS[model],
        layer,
        mode,
        batch,
        tokens=tokens if mode == "prefill" else None,
        layers=4 if layer == "stack" else None,
        n_ctx=N_CTX,
        kv_tokens=kv_tokens,
    )


def planned(graph: Graph, policy: str, streams: str = "multi") -> tuple[Schedule, MemoryPlan]:
    """The multi-stream (or serial) schedule of `graph` and `policy`'s plan for it."""
    report = detect_branches(graph)
    schedule = stream_schedule(graph, report) if streams == "multi" else serial_schedule(graph)
    return schedule, plan_memory(graph, schedule, report, policy)


class OpBuilder:
    """A GraphContext with shorthands for one-op test graphs."""

    def __init__(self) -> None:
        self.ctx = GraphContext()

    def inp(self, name: str, dtype: str, *ne: int) -> str:
        return self.ctx.leaf(name, dtype, ne, TensorKind.INPUT)

    def weight(self, name: str, *ne: int) -> str:
        return self.ctx.leaf(name, "f32", ne, TensorKind.WEIGHT)

    def state(self, name: str, dtype: str, *ne: int) -> str:
        return self.ctx.leaf(name, dtype, ne, TensorKind.STATE)

    def finish(self, *outputs: str) -> Graph:
        for out in outputs:
            self.ctx.set_output(out)
            self.ctx.expand(out)
        meta = GraphMeta(model="op-test", layer="op", mode="decode", batch=1, tokens=1, n_layers=1)
        return self.ctx.finish(meta, None)


def op_graph(build: Callable[[OpBuilder], str | tuple[str, ...]]) -> Graph:
    b = OpBuilder()
    out = build(b)
    return b.finish(*(out if isinstance(out, tuple) else (out,)))


def values_for(graph: Graph, seed: int, **given: np.ndarray) -> dict[str, np.ndarray]:
    """N(0, 1) for every f32/f16 leaf not in `given` (NumPy order), `given` as is."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name in graph.leafs:
        t = graph[name]
        if name in given:
            out[name] = np.asarray(given[name]).reshape(t.shape[::-1])
        elif t.dtype in ("f32", "f16"):
            out[name] = rng.normal(0.0, 1.0, t.shape[::-1])
        else:
            raise AssertionError(f"test must give integer leaf {name!r}")
    return out


def l2_normalised(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    x = rng.normal(0.0, 1.0, shape)
    return x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + 1e-6)


def report(
    record_property: Callable[[str, object], None], error: float, tol: float, worst: str = ""
) -> None:
    """Attach the error to the test's JUnit record (the self-check's summary table reads it)."""
    record_property("max_rel_error", f"{error:.3e}")
    record_property("tolerance", f"{tol:.0e}")
    if worst:
        record_property("worst", worst)


def report_check(record_property: Callable[[str, object], None], check) -> None:  # type: ignore[no-untyped-def]
    """`report` of a GpuCheck, plus its exact comparison and the casts' rounding excess."""
    report(record_property, check.error, check.tolerance, check.worst)
    record_property("exact_rel_error", f"{check.exact_error:.3e}")
    record_property("exact_tolerance", f"{check.exact_tolerance:.1e}")
    if check.rounding_error:
        record_property("rounding_excess", f"{check.rounding_excess:.3f}")
        record_property("rounding_error", f"{check.rounding_error:.3e}")


def fused(lp, kernel: str, source: str, at: str, tensors: list[str], scalars=(), skip=()):  # type: ignore[no-untyped-def]
    """`lp` with node `at` running one fused kernel over `tensors` (+ scalar args) and the nodes
    in `skip` launching nothing: how the fused kernels (not yet chosen by the lowering, which
    must first be taught to the planner) are tested against the unfused graph's reference.
    Only valid with a plan that reuses no memory (the fused kernel reads tensors later)."""
    import dataclasses

    from concurrency.execute.gpu.launch import KernelLaunch
    from concurrency.execute.gpu.lowering import EW_BLOCK, _ew_grid, _row_block, ten

    refs = [lp.tensors[t] for t in tensors]
    args = tuple(a for r in refs for a in ten(r)) + tuple(scalars)
    if kernel.endswith("norm_f32") or kernel == "rms_norm_mul_f32":
        grid, block = (refs[1].ncols, 1, 1), _row_block(refs[1].shape[0])
    else:
        grid, block = _ew_grid(int(np.prod(refs[0].shape))), (EW_BLOCK, 1, 1)
    launch = KernelLaunch(kernel, source, grid, block, 0, args)
    nodes = tuple(
        dataclasses.replace(
            n, launches=(launch,) if n.node == at else () if n.node in skip else n.launches
        )
        for n in lp.nodes
    )
    return dataclasses.replace(lp, nodes=nodes)
