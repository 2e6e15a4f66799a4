"""Schedules: which stream runs each node, which events it waits for, and the
happens-before relation that follows.

A stream runs its nodes in graph order. A node waits (through an event recorded after the
producer) for every dependency that runs on another stream — the fork event, the joins, and
any cross-stream edge such as a branch reading a state gather done on the main stream. The
happens-before relation is per-stream order plus those waits, closed transitively; it is
precomputed as one bitset per node, so `happens_before(a, b)` is O(1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType

from concurrency.errors import ConfigError
from concurrency.graph.branches import BranchReport
from concurrency.graph.ir import Graph

DEFAULT_MAX_STREAMS = 8  # GGML_CUDA_MAX_STREAMS


@dataclass(frozen=True)
class Schedule:
    """Streams and waits for every node of a graph (stream 0 is the main stream)."""

    nodes: tuple[str, ...]
    stream: tuple[int, ...]
    waits: tuple[tuple[int, ...], ...]  # per node: indices of nodes on other streams it awaits
    n_streams: int
    _ancestors: tuple[int, ...] = field(repr=False, compare=False, default=())

    @cached_property
    def index(self) -> Mapping[str, int]:
        """Node name → position; built once (stream_of sits on hot paths)."""
        return MappingProxyType({n: i for i, n in enumerate(self.nodes)})

    def happens_before(self, a: int, b: int) -> bool:
        """True when node index `a` surely finishes before node index `b` starts."""
        return bool(self._ancestors[b] >> a & 1)

    def ancestors(self, b: int) -> int:
        """Bitset of the node indices that happen before node `b`."""
        return self._ancestors[b]

    @cached_property
    def settled_at(self) -> tuple[int, ...]:
        """settled_at[m]: the first index from which node m happens before every node (so
        from there on m never has to be waited for again)."""
        n = len(self.nodes)
        settle = [n] * n
        unseen = (1 << n) - 1
        for k in range(n - 1, -1, -1):
            late = ~self._ancestors[k] & unseen & ((1 << k) - 1)
            unseen &= ~late
            while late:
                m = late.bit_length() - 1
                settle[m] = k + 1
                late &= ~(1 << m)
        for m in range(n):
            if unseen >> m & 1:
                settle[m] = m + 1
        return tuple(settle)

    @cached_property
    def unordered_sets(self) -> tuple[int, ...]:
        """Per node index, a bitset of the nodes it is unordered with (neither happens before
        the other): ancestors forward, descendants backward; computed once per schedule."""
        n = len(self.nodes)
        desc = [0] * n
        last_on: dict[int, int] = {}
        preds: list[list[int]] = []
        for i, s in enumerate(self.stream):
            p = list(self.waits[i])
            if s in last_on:
                p.append(last_on[s])
            last_on[s] = i
            preds.append(p)
        for i in reversed(range(n)):
            for j in preds[i]:
                desc[j] |= desc[i] | 1 << i
        full = (1 << n) - 1
        return tuple(full ^ (self._ancestors[i] | desc[i] | 1 << i) for i in range(n))

    def ordered(self, a: int, b: int) -> bool:
        """True when the schedule orders the two nodes one way or the other."""
        return a == b or self.happens_before(a, b) or self.happens_before(b, a)

    def stream_of(self, name: str) -> int:
        return self.stream[self.index[name]]


def schedule_from_streams(graph: Graph, stream: list[int] | tuple[int, ...]) -> Schedule:
    """A schedule with an explicit stream per node (index-aligned with `graph.nodes`); each
    node waits for its cross-stream dependencies. Used by tests and custom assignments."""
    if len(stream) != len(graph.nodes):
        raise ConfigError(
            f"need one stream per node: {len(graph.nodes)} nodes, {len(stream)} given"
        )
    if any(s < 0 for s in stream):
        raise ConfigError("stream numbers must be ≥ 0")
    return _finish(graph, list(stream), max(stream, default=0) + 1)


def _finish(
    graph: Graph, stream: list[int], n_streams: int, joins: dict[int, set[int]] | None = None
) -> Schedule:
    deps = graph.dependencies
    extra = joins or {}
    waits = tuple(
        tuple(sorted(j for j in set(d) | extra.get(i, set()) if stream[j] != stream[i]))
        for i, d in enumerate(deps)
    )
    last_on: dict[int, int] = {}
    anc: list[int] = []
    for i in range(len(graph.nodes)):
        bits = 0
        prev = last_on.get(stream[i])
        if prev is not None:
            bits |= anc[prev] | (1 << prev)
        for j in waits[i]:
            bits |= anc[j] | (1 << j)
        anc.append(bits)
        last_on[stream[i]] = i
    return Schedule(tuple(graph.nodes), tuple(stream), waits, n_streams, tuple(anc))


def serial_schedule(graph: Graph) -> Schedule:
    """Everything on one stream, in graph order: the baseline ggml's allocator assumes."""
    return _finish(graph, [0] * len(graph.nodes), 1)


def stream_schedule(
    graph: Graph, report: BranchReport, max_streams: int = DEFAULT_MAX_STREAMS
) -> Schedule:
    """Branch k of every fork region on stream k (wrapping within 1..max_streams−1); every
    other node on the main stream. With max_streams = 1 this is the serial schedule."""
    if not isinstance(max_streams, int) or max_streams < 1:
        raise ConfigError(f"max_streams must be a positive integer, got {max_streams!r}")
    stream = [0] * len(graph.nodes)
    used = 1
    joins: dict[int, set[int]] = {}
    if max_streams > 1:
        for region in report.regions:
            end = graph.index[region.end]
            for k, branch in enumerate(region.branches):
                s = k % (max_streams - 1) + 1
                used = max(used, s + 1)
                for n in branch.nodes:
                    stream[graph.index[n]] = s
                # ggml records each side stream's join event at the join, after everything
                # queued on it: the join waits for the whole branch, and so does the end.
                tail = max(graph.index[n] for n in branch.nodes)
                joins.setdefault(graph.index[branch.join], set()).add(tail)
                joins.setdefault(end, set()).add(tail)
    return _finish(graph, stream, used, joins)
