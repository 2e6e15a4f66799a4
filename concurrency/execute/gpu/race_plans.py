"""The plans of the race experiment, as plain values (no CuPy): which plans a case replays,
what the checker says each must do, the planted ordered overwrite, and the window wideners.

What the checker says decides what must happen on the GPU (`expectation`):
* no hazard → the plan must never differ from the reference;
* a use after reuse (an ordered overwrite) → it must differ in every run. The planted plan
  (`planted_overwrite`: one tensor of the safe plan moved onto the bytes of a tensor whose last
  read comes later on the same stream) and `interleave` on one stream (planned on an order the
  stream does not run) are such plans;
* races only → timing decides.

A *window widener* (`Widener`) slows one stream so a race that did not show by itself gets a
chance to: a delay kernel spinning for X µs right before the node the allocator assumed runs
first (the other stream then reaches its access first), or that stream's previous node
repeated (only a node whose output overlaps none of its inputs, so repeating it changes no
value). `widen` applies one to a launch plan; nothing else changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from concurrency.errors import LaceError
from concurrency.execute.gpu.cases import MULTI, ONE, CaseContext, Placed
from concurrency.execute.gpu.launch import LaunchPlan, NodeLaunch
from concurrency.graph.schedule import Schedule
from concurrency.memory.check import RAW, WAR, WAW, Hazard, PlanCheck, check_plan
from concurrency.memory.ggml.tallocr import align_up
from concurrency.memory.plan import MemoryPlan

DEFAULT_DELAY_US = 200.0
DEFAULT_REPEAT = 8
REFERENCE_POLICY = "happens_before"
#: The plans of a case on its multi-stream schedule, in the order they run: the reference
#: first, then the seed's unsafe plans.
MULTI_POLICIES = (
    REFERENCE_POLICY,
    "sequential",
    "interleave",
    "no_alloc_free",
    "alloc_dep",
    "no_reuse",
    "torch_caching",
    "torch_record_stream",
)
#: Plans run on one stream too: interleave is planned on an order one stream does not run.
ONE_STREAM_POLICIES = ("interleave",)
PLANTED = "planted"
EVERY_RUN, NEVER, TIMING = "every run", "never", "depends on timing"
WIDENER_KINDS = ("delay", "repeat")


# ---------------------------------------------------------------------------- expectations
def expectation(races: int, uses_after_reuse: int) -> str:
    """What the checker's verdict says a plan must do on the GPU."""
    if uses_after_reuse:
        return EVERY_RUN
    return TIMING if races else NEVER


def verdict(expected: str, runs: int, wrong_runs: int, bitwise_runs: int = 0) -> str:
    """'ok' / 'FAIL' where the checker decides (wrong: above the tolerance); for races,
    'shown', 'bits only' (outputs differ bitwise but within the tolerance) or 'not shown'.

    Bitwise differences alone never fail a safe plan: cuBLASLt may pick another algorithm for
    operands at other addresses (`bitwise_runs` says how often it happened)."""
    if runs == 0:
        return "not run"
    if expected == NEVER:
        return "ok" if wrong_runs == 0 else "FAIL"
    if expected == EVERY_RUN:
        return "ok" if wrong_runs == runs else "FAIL"
    if wrong_runs:
        return "shown"
    return "bits only" if bitwise_runs else "not shown"


# ---------------------------------------------------------------------------- wideners
@dataclass(frozen=True)
class DelayLaunch:
    """A kernel that spins for `ns` nanoseconds on the stream it is launched on (one thread);
    bound by `RaceRun`, never by the plain runner."""

    ns: int
    kernel: str = "lace_delay"

    def pointers(self) -> Iterator[Any]:
        return iter(())


@dataclass(frozen=True)
class Widener:
    """What slows one stream down so a race's window opens wider.

    kind "delay": a `DelayLaunch` of `amount` µs before node `node`; kind "repeat": node
    `node`'s launches run 1 + `amount` times (only nodes whose output overlaps none of their
    inputs, so repeating them changes no value). `hazard` names the race it aims at."""

    kind: str
    node: str
    stream: int
    amount: float
    hazard: str

    def describe(self) -> str:
        what = (
            f"delay {self.amount:g} µs before {self.node}"
            if self.kind == "delay"
            else f"{self.node} repeated {1 + int(self.amount)}×"
        )
        return f"{what} (stream {self.stream}), aimed at the race {self.hazard}"


def _hazard_text(h: Hazard) -> str:
    return f"{h.first_node} → {h.second_node} ({h.access}, {h.first_tensor}/{h.second_tensor})"


#: Which races a widener aims at first: delaying the read of a write-after-read makes it read
#: the other stream's bytes, delaying the write of a read-after-write leaves its reader the
#: bytes before it; delaying the first write of a write-after-write corrupts only a reader
#: that comes after both writes.
_AIM = {WAR: 0, RAW: 1, WAW: 2}


def target_race(check: PlanCheck) -> Hazard | None:
    """The race a widener aims at: a write-after-read if there is one, else a read-after-
    write, else a write-after-write; the one whose first node (the access the allocator
    assumed comes first) is earliest in the graph. None without races between two nodes."""
    index = check.graph.index
    races = [h for h in check.races if h.first_node in index and h.second_node in index]
    return min(
        races,
        key=lambda h: (_AIM.get(h.access or "", 3), index[h.first_node], index[h.second_node]),
        default=None,
    )


def widener_for(
    check: PlanCheck,
    lp: LaunchPlan,
    kind: str = "delay",
    amount: float = DEFAULT_DELAY_US,
) -> Widener | None:
    """A widener for the plan's target race: a delay right before its first node (that
    stream then reaches the access late, so the other stream's access comes first), or the
    repetition of the last repeatable node before it on its stream that the other access does
    not wait for (amount: extra runs); None when there is no such node."""
    if kind not in WIDENER_KINDS:
        raise LaceError(f"widener kind must be one of {', '.join(WIDENER_KINDS)}, not {kind!r}")
    hazard = target_race(check)
    if hazard is None:
        return None
    index = check.graph.index[hazard.first_node]
    second = check.graph.index[hazard.second_node]
    stream = lp.nodes[index].stream
    if kind == "delay":
        return Widener("delay", hazard.first_node, stream, float(amount), _hazard_text(hazard))
    for node in reversed(lp.nodes[:index]):
        if node.stream != stream or not node.launches or not repeatable(lp, node):
            continue
        if check.schedule.happens_before(node.index, second):
            break  # slowing it would slow the other access too
        return Widener("repeat", node.node, stream, float(int(amount)), _hazard_text(hazard))
    return None


def repeatable(lp: LaunchPlan, node: NodeLaunch) -> bool:
    """Whether running `node`'s launches again changes nothing: the bytes it writes overlap
    none of the bytes it reads (the device locations of its tensor and its sources)."""
    graph = lp.graph
    out = lp.tensors.get(node.node)
    if out is None:
        return False
    for src in graph[node.node].srcs:
        ref = lp.tensors.get(src)
        if ref is None or ref.ptr.buffer != out.ptr.buffer:
            continue
        a0, a1 = out.ptr.offset_bytes, out.ptr.offset_bytes + out.nbytes
        b0, b1 = ref.ptr.offset_bytes, ref.ptr.offset_bytes + ref.nbytes
        if a0 < b1 and b0 < a1:
            return False
    return True


def widen(lp: LaunchPlan, widener: Widener) -> LaunchPlan:
    """`lp` with the widener applied: a DelayLaunch first in its node's launches, or the
    node's launches repeated. Nothing else changes (streams, waits, addresses)."""
    nodes = list(lp.nodes)
    try:
        i = next(k for k, n in enumerate(nodes) if n.node == widener.node)
    except StopIteration:
        raise LaceError(f"node {widener.node!r} is not in this launch plan") from None
    node = nodes[i]
    if widener.kind == "delay":
        launches = (DelayLaunch(round(widener.amount * 1000)), *node.launches)
    else:
        launches = node.launches * (1 + int(widener.amount))
    nodes[i] = dataclasses.replace(node, launches=launches)  # type: ignore[arg-type]
    return dataclasses.replace(lp, nodes=tuple(nodes))


# ---------------------------------------------------------------------------- planted plan
@dataclass(frozen=True)
class Planted:
    """A safe plan with one tensor moved onto another's bytes: `moved` (written by node
    `moved`) now overwrites `onto`, whose last read by `reader` comes after it in an order
    the schedule keeps: a use after reuse the checker reports, corrupt in every run."""

    plan: MemoryPlan = field(repr=False)
    moved: str
    onto: str
    reader: str
    check: PlanCheck = field(repr=False, compare=False)

    def describe(self) -> str:
        return f"{self.moved} moved onto {self.onto} (still read by {self.reader})"


def _touch_indices(plan: MemoryPlan) -> tuple[dict[str, int], dict[str, int]]:
    """Per planned base tensor: the index of its first write (−1 for a graph input) and of its
    last read, from the graph's memory touches."""
    graph = plan.graph
    first_write: dict[str, int] = {n: -1 for n in graph.planned if graph[n].is_input}
    last_read: dict[str, int] = {}
    for i, _tensor, base, _offset, _nbytes, write in graph.memory_touches:
        if write:
            first_write.setdefault(base, i)
        else:
            last_read[base] = max(last_read.get(base, -1), i)
    return first_write, last_read


def overwrite_candidates(
    plan: MemoryPlan, schedule: Schedule
) -> Iterator[tuple[str, str, str, int]]:
    """(moved, onto, reader, offset) in graph order, same-stream readers first: node `moved`
    writes a planned tensor of its own, placed at `offset` inside the bytes of `onto` (its
    start, or so that it ends where `onto` ends); `onto` was written before `moved` and is last
    read by `reader` after it, both in an order the schedule keeps; `moved` does not read
    `onto` itself (that would be a node writing over its own input). Both are f32
    activations, never graph inputs: an overwritten index tensor (token ids, state cells) would
    send a kernel outside its buffers instead of computing a wrong value."""
    graph = plan.graph
    first_write, last_read = _touch_indices(plan)
    bases = [
        n
        for n in graph.planned
        if n in plan.offsets and graph[n].nbytes and graph[n].dtype == "f32"
        if not graph[n].is_input
    ]
    found = []
    for w, name in enumerate(graph.nodes):
        t = graph[name]
        if name not in plan.offsets or t.view_src is not None or not t.nbytes or t.dtype != "f32":
            continue
        reads = {graph.base(s) for s in t.srcs}
        for onto in bases:
            written, read = first_write.get(onto), last_read.get(onto, -1)
            if onto == name or onto in reads or written is None or written >= w or read <= w:
                continue
            if written >= 0 and not schedule.happens_before(written, w):
                continue
            if not schedule.happens_before(w, read):
                continue
            start = plan.offsets[onto]
            size = align_up(t.nbytes, plan.alignment)
            tail = start + max(graph[onto].nbytes - size, 0) // plan.alignment * plan.alignment
            same = schedule.stream[read] == schedule.stream[w]
            for offset in dict.fromkeys((start, tail)):
                found.append((not same, w, name, onto, graph.nodes[read], offset))
    for *_, name, onto, reader, offset in sorted(found, key=lambda f: f[:2]):
        yield name, onto, reader, offset


def planted_overwrite(
    plan: MemoryPlan, schedule: Schedule | None = None, max_tries: int = 300
) -> Planted:
    """`plan` (safe under `schedule`) with one ordered overwrite planted: the first candidate
    (`overwrite_candidates`) for which the checker reports a use after reuse by the moved
    tensor's writer and no race, else the first with the use after reuse and races too."""
    schedule = plan.schedule if schedule is None else schedule
    fallback: Planted | None = None
    for tries, (moved, onto, reader, offset) in enumerate(overwrite_candidates(plan, schedule)):
        if tries >= max_tries:
            break
        offsets = dict(plan.offsets)
        offsets[moved] = offset
        end = offset + align_up(plan.graph[moved].nbytes, plan.alignment)
        inplace = {c: p for c, p in plan.inplace_of.items() if moved not in (c, p)}
        planted = dataclasses.replace(
            plan,
            policy=f"{plan.policy}+planted",
            offsets=offsets,
            inplace_of=inplace,
            arena_bytes=max(plan.arena_bytes, end),
            notes=(f"planted: {moved} moved onto {onto}, still read by {reader}",),
        )
        check = check_plan(planted, schedule)
        if not any(h.first_node == moved for h in check.uses_after_reuse):
            continue
        found = Planted(planted, moved, onto, reader, check)
        if not check.races:
            return found
        fallback = fallback or found
    if fallback is None:
        raise LaceError(
            f"no tensor of this {plan.policy} plan can be moved onto another that is read after "
            "it in an order the schedule keeps; plant the overwrite in a larger graph"
        )
    return fallback


# ---------------------------------------------------------------------------- the plans
@dataclass(frozen=True)
class RaceSubject:
    """A plan to replay: its label, its placement and the launch plan's widener, if any."""

    label: str
    placed: Placed
    planted: Planted | None = None
    widener_kind: str | None = None

    @property
    def plan(self) -> MemoryPlan:
        return self.planted.plan if self.planted else self.placed.plan

    @property
    def check(self) -> PlanCheck:
        return self.planted.check if self.planted else self.placed.check


def race_subjects(ctx: CaseContext) -> list[RaceSubject]:
    """Every plan of a case, in the order they run: the reference, the seed's unsafe plans,
    the planted overwrite, the other policies, then the one-stream plans."""
    subjects = []
    for policy in MULTI_POLICIES:
        placed = ctx.place(policy, MULTI)
        subjects.append(RaceSubject(policy, placed))
        if policy == "interleave":
            reference = subjects[0].placed
            planted = planted_overwrite(reference.plan, reference.schedule)
            subjects.append(RaceSubject(PLANTED, reference, planted))
    for policy in ONE_STREAM_POLICIES:
        subjects.append(RaceSubject(f"{policy} (one stream)", ctx.place(policy, ONE)))
    return subjects
