"""`torch_caching` and `torch_record_stream`: the same graph run eagerly by PyTorch, its
memory placed by PyTorch's CUDA caching allocator (c10/cuda/CUDACachingAllocator.cpp,
modelled in `concurrency.memory.pytorch.caching_allocator`).

Why it is here: vLLM and SGLang overlap work on side streams in eager PyTorch (shared
experts, attention beside MoE, communication beside compute), and their memory comes from
this allocator. Its pools are per stream: a freed block is reused only by a later allocation
on the stream that allocated it, which is safe for that stream's own uses (stream order) but
not for uses on other streams. `Tensor.record_stream(s)` tells it about those: the block is
then held back until events recorded on each such stream at free time have completed. Without
it, a side stream reading a main-stream tensor can race with a later main-stream allocation
reusing the block, the hazard class of ggml's #21897; with it, the plan is race-free.

How LACE runs the graph: the host issues the nodes in graph order, each on its schedule
stream (the "current stream"). Graph inputs are allocated first, on the main stream, and the
caller holds them to the end. A node's output (a planned, non-empty tensor) is allocated when
the node is issued, on the node's stream; PyTorch has no opportunistic in-place reuse, so
each gets its own block (ggml's in-place ops are views, which allocate nothing). Its block
is freed once the last node referring to it or to a view of it has been issued (the Python
reference dropped); outputs are never freed, and neither is the base of an output that is a
view: the caller holds the view, and a view holds its base's storage. `torch_record_stream`
calls `record_stream` for every stream that touches a tensor's bytes other than the one that
allocated it; its events are recorded, at free time, after the last node already issued on
each such stream.

When an event has completed is a matter of GPU timing that a plan cannot know. LACE counts an
event as complete for an allocation exactly when the schedule orders the event's node before
the allocating node: then reuse is safe whatever the timing, and the checker agrees with the
plan. (A real GPU that has already run the node frees the block sooner; one that lags frees it
later: the offsets can differ, the safety does not.)

Simplifications: default allocator settings (see the model's docstring); the arena is the
reserved memory, segments laid end to end in cudaMalloc order; `alignment` is ignored
(PyTorch rounds to 512 B, which CUDA's 128 B and ggml-cpu's 32 B both divide) and the plan
records 512; `freed_after` is the node whose issue dropped the last reference (with
`record_stream` the bytes reach the pool later, when the events have completed); empty
tensors get no block and offset 0.
"""

from __future__ import annotations

from concurrency.graph.branches import BranchReport
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import Schedule
from concurrency.memory.plan import MemoryPlan
from concurrency.memory.policies.outputs import output_view_bases
from concurrency.memory.pytorch.caching_allocator import (
    MIN_BLOCK_BYTES,
    Block,
    CachingAllocator,
    round_size,
)

MAIN_STREAM = 0


def last_references(graph: Graph) -> dict[str, int]:
    """Planned tensor → index of the last node that refers to it or to a view of it (its
    reader, or the node itself when it is a view written through); absent when no node
    refers to it."""
    planned = set(graph.planned)
    last: dict[str, int] = {}
    for i, name in enumerate(graph.nodes):
        for ref in (name, *graph[name].srcs):
            base = graph.base(ref)
            if base in planned:
                last[base] = i
    return last


def eager_plan(graph: Graph, schedule: Schedule, record_stream: bool, policy: str) -> MemoryPlan:
    """Run `graph` eagerly in node order under `schedule` and place every planned tensor as
    PyTorch's caching allocator would (see the module docstring)."""
    cca = CachingAllocator()
    blocks: dict[str, Block] = {}
    offsets: dict[str, int] = {}
    sizes: dict[str, int] = {}
    freed_after: dict[str, str] = {}

    held = output_view_bases(graph)  # the caller's output views hold these
    drop_at: dict[int, list[str]] = {}
    for base, i in last_references(graph).items():
        t = graph[base]
        if not t.is_output and not t.is_input and base not in held:
            drop_at.setdefault(i, []).append(base)
    touched: dict[int, list[str]] = {}
    if record_stream:
        for i, _, base, _, _, _ in graph.memory_touches:
            touched.setdefault(i, []).append(base)

    def place(name: str, block: Block | None) -> None:
        if block is not None:
            blocks[name] = block
        offsets[name] = 0 if block is None else block.offset
        sizes[name] = 0 if block is None else round_size(graph[name].nbytes)

    inputs = [n for n in graph.planned if graph[n].is_input]
    for name in inputs:  # the host writes them before the first node
        nbytes = graph[name].nbytes
        place(name, cca.malloc(nbytes, MAIN_STREAM) if nbytes else None)

    last_on: dict[int, int] = {}  # stream → last node issued on it
    for i, name in enumerate(graph.nodes):
        stream = schedule.stream[i]
        last_on[stream] = i
        t = graph[name]
        if t.view_src is None and not t.external and not t.is_input:
            ancestors = schedule.ancestors(i)

            def done(event: int, ancestors: int = ancestors) -> bool:
                return bool(ancestors >> event & 1)

            place(name, cca.malloc(t.nbytes, stream, done) if t.nbytes else None)
        for base in touched.get(i, ()):
            cca.record_stream(blocks[base], stream)
        for base in drop_at.get(i, ()):
            if base in blocks:
                cca.free(blocks[base], last_on.__getitem__)
                freed_after[base] = name

    return MemoryPlan(
        policy=policy,
        alignment=MIN_BLOCK_BYTES,
        offsets=offsets,
        sizes=sizes,
        arena_bytes=cca.reserved_bytes,
        order=tuple(graph.nodes),
        freed_after=freed_after,
        notes=(
            f"PyTorch reserves {cca.reserved_bytes} B in {cca.segments} segment(s); "
            f"peak allocated {cca.peak_allocated_bytes} B",
        ),
        graph=graph,
        schedule=schedule,
    )


def plan(graph: Graph, schedule: Schedule, report: BranchReport, alignment: int) -> MemoryPlan:
    """Without `record_stream`: side-stream uses are invisible to the allocator."""
    return eager_plan(graph, schedule, False, "torch_caching")


def plan_record_stream(
    graph: Graph, schedule: Schedule, report: BranchReport, alignment: int
) -> MemoryPlan:
    """With `record_stream` on every tensor used by a stream other than its own."""
    return eager_plan(graph, schedule, True, "torch_record_stream")
