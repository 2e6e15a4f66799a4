"""LACE's allocator port against ggml-alloc itself, graph by graph.

For each policy ggml can express, the same graph is planned twice — by LACE and by the real
`ggml_gallocr` through the C API — and every offset and the buffer size are compared:

* `sequential`: ggml-alloc as it is;
* `interleave`: ggml-alloc on the interleaved node order (#16991 plans exactly so);
* `alloc_dep`: ggml-alloc with #27301's dependency nodes inserted as ggml's scheduler does.

`no_alloc_free` (#21897) was never merged and `happens_before` is LACE's own: ggml has no
twin for them. `no_reuse` is not an allocator mode of ggml either.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from concurrency.graph.branches import BranchReport, detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import serial_schedule
from concurrency.memory.plan import MemoryPlan
from concurrency.memory.policies import plan_memory
from concurrency.memory.policies.alloc_dep import dependencies
from concurrency.memory.policies.interleave import interleaved_nodes
from concurrency.oracle.ggml_lib import Ggml
from concurrency.oracle.ggml_plan import ggml_plan

ORACLE_POLICIES = ("sequential", "interleave", "alloc_dep")


@dataclass(frozen=True)
class Fidelity:
    """One comparison: LACE's plan and ggml's for the same graph and policy."""

    graph: str
    policy: str
    lace_bytes: int
    ggml_bytes: int
    tensors: int
    mismatched: tuple[tuple[str, int, int], ...]  # (tensor, LACE offset, ggml offset)

    @property
    def equal(self) -> bool:
        return self.lace_bytes == self.ggml_bytes and not self.mismatched

    def row(self) -> dict[str, object]:
        return {
            "graph": self.graph,
            "policy": self.policy,
            "lace_bytes": self.lace_bytes,
            "ggml_bytes": self.ggml_bytes,
            "tensors": self.tensors,
            "offsets_equal": not self.mismatched,
            "equal": self.equal,
        }


def compare_plans(
    ggml: Ggml, graph: Graph, report: BranchReport, policy: str, label: str = ""
) -> Fidelity:
    """Plan `graph` under `policy` with LACE and with ggml, and compare."""
    alignment = ggml.base.ggml_backend_buft_get_alignment(ggml.cpu_buffer_type)
    lace = plan_memory(graph, serial_schedule(graph), report, policy, alignment)
    if policy == "sequential":
        theirs = ggml_plan(ggml, graph)
    elif policy == "interleave":
        theirs = ggml_plan(ggml, graph, order=interleaved_nodes(graph, report))
    elif policy == "alloc_dep":
        theirs = ggml_plan(ggml, graph, keep_until=dependencies(graph, report))
    else:
        raise ValueError(f"ggml has no twin of policy {policy!r}; compare {ORACLE_POLICIES}")
    return _diff(label or _label(graph), policy, lace, theirs.offsets, theirs.buffer_bytes)


def _diff(
    label: str, policy: str, lace: MemoryPlan, theirs: dict[str, int], ggml_bytes: int
) -> Fidelity:
    names = sorted(set(lace.offsets) | set(theirs))
    bad = tuple(
        (n, lace.offsets.get(n, -1), theirs.get(n, -1))
        for n in names
        if lace.offsets.get(n, -1) != theirs.get(n, -1)
    )
    return Fidelity(label, policy, lace.arena_bytes, ggml_bytes, len(names), bad)


def _label(graph: Graph) -> str:
    m = graph.meta
    shape = f"B={m.batch}" + (f" T={m.tokens}" if m.mode == "prefill" else "")
    layer = m.layer if m.layer != "stack" else f"stack×{m.n_layers}"
    return f"{m.model} {layer} {m.mode} {shape}"


@dataclass(frozen=True)
class Case:
    model: str
    layer: str
    mode: str
    batch: int
    tokens: int | None = None
    layers: int | None = None


def preset_cases(models: Iterable[str], batches: Sequence[int] = (1, 4)) -> list[Case]:
    """GDN layer, attention layer and a 4-layer stack, decode and prefill, per batch size."""
    out = []
    for model in models:
        for layer, layers in (("gdn", None), ("attn", None), ("stack", 4)):
            for b in batches:
                out.append(Case(model, layer, "decode", b, None, layers))
                out.append(Case(model, layer, "prefill", b, 16, layers))
    return out


def fidelity_table(ggml: Ggml, cases: Iterable[Case], detector: str = "ggml") -> list[Fidelity]:
    """Compare every ggml-expressible policy on every case. `interleave` and `alloc_dep` take
    their regions from `detector` (ggml-cuda's own by default, as the PRs do)."""
    rows = []
    for c in cases:
        graph = build_graph(c.model, c.layer, c.mode, c.batch, c.tokens, c.layers)
        report = detect_branches(graph, detector)
        for policy in ORACLE_POLICIES:
            rows.append(compare_plans(ggml, graph, report, policy))
    return rows


def load_oracle() -> tuple[Ggml | None, str]:
    """The oracle, or None and the reason it is unavailable (for notebooks and reports,
    which must still run where it cannot be built)."""
    from concurrency.errors import LaceError

    try:
        return Ggml.load(), "ggml oracle loaded"
    except LaceError as exc:
        return None, str(exc)


def load_probe():  # type: ignore[no-untyped-def]
    """The engine probe function, or None and the reason it cannot run here."""
    from concurrency.errors import LaceError

    try:
        from concurrency.oracle import engine

        engine.llama_version()
        return engine.probe, "engine probe ready (llama-cpp-python " + engine.llama_version() + ")"
    except (ImportError, LaceError) as exc:
        return None, f"engine probe unavailable: {exc}"
