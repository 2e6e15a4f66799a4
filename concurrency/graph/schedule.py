"""Schedules: which stream runs each node, which events it waits for, and the
happens-before relation that follows.

A stream runs its nodes in graph order. A node waits (through an event recorded after the
producer) for every dependency that runs on another stream — the fork event, the joins, and
any cross-stream edge such as a branch reading a state gather done on the main stream. The
happens-before relation is per-stream order plus those waits, closed transitively; it is
precomputed as one bitset per node, so `happens_before(a, b)` is O(1).
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from itertools import pairwise
from types import MappingProxyType

from concurrency.errors import ConfigError
from concurrency.graph.branches import BranchReport
from concurrency.graph.ir import Graph

DEFAULT_MAX_STREAMS = 8  # GGML_CUDA_MAX_STREAMS


@dataclass(frozen=True)
class Schedule:
    """Streams and waits for every node of a graph (stream 0 is the main stream).

    `nodes` are the graph's node names in graph order; `stream[i]` the stream that runs node
    i; `waits[i]` the indices of the earlier nodes, on other streams, whose events node i
    waits for; `n_streams` the number of streams used (one more than the largest stream
    number). The happens-before bitsets are computed here from `stream` and `waits`, so a
    hand-built `Schedule(nodes, stream, waits, n_streams)` is as usable as one from
    `stream_schedule`. It is checked when made: one ConfigError names what is wrong (lengths
    that differ, stream numbers outside 0..n_streams−1, a wait on a later node, on the node
    itself or on a node of the same stream — a stream already runs its nodes in order, so
    drop that wait). Waits are stored sorted and without repeats.

    A schedule does not know the graph's data dependencies: one that leaves out a needed
    wait is well formed but racy, which `concurrency.memory.check` reports.
    """

    nodes: tuple[str, ...]
    stream: tuple[int, ...]
    waits: tuple[tuple[int, ...], ...]  # per node: indices of nodes on other streams it awaits
    n_streams: int
    _ancestors: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        nodes, stream, waits, n_streams = _checked(
            self.nodes, self.stream, self.waits, self.n_streams
        )
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "n_streams", n_streams)
        object.__setattr__(self, "stream", stream)
        object.__setattr__(self, "waits", waits)
        object.__setattr__(self, "_ancestors", _ancestor_bitsets(stream, waits))

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
    ints = [_as_int(s) for s in stream]
    for name, s, x in zip(graph.nodes, ints, stream, strict=True):
        if s is None or s < 0:
            raise ConfigError(f"node {name!r} has stream {x!r}; stream numbers are integers ≥ 0")
    return _finish(graph, ints, max(ints, default=0) + 1)  # type: ignore[arg-type]


def _finish(
    graph: Graph, stream: list[int], n_streams: int, joins: dict[int, set[int]] | None = None
) -> Schedule:
    deps = graph.dependencies
    extra = joins or {}
    waits = tuple(
        tuple(sorted(j for j in set(d) | extra.get(i, set()) if stream[j] != stream[i]))
        for i, d in enumerate(deps)
    )
    return Schedule(tuple(graph.nodes), tuple(stream), waits, n_streams)


def _ancestor_bitsets(
    stream: tuple[int, ...], waits: tuple[tuple[int, ...], ...]
) -> tuple[int, ...]:
    """Per node, the bitset of the nodes that happen before it: the previous node of its
    stream and every awaited node, each with its own ancestors (one pass in graph order)."""
    last_on: dict[int, int] = {}
    anc: list[int] = []
    for i, s in enumerate(stream):
        bits = 0
        prev = last_on.get(s)
        if prev is not None:
            bits |= anc[prev] | (1 << prev)
        for j in waits[i]:
            bits |= anc[j] | (1 << j)
        anc.append(bits)
        last_on[s] = i
    return tuple(anc)


def _as_int(x: object) -> int | None:
    """x as a plain int when it is an integer (a NumPy integer too, not a bool), else None."""
    if isinstance(x, bool):
        return None
    try:
        return operator.index(x)  # type: ignore[arg-type]
    except TypeError:
        return None


def _checked(
    nodes: Iterable[str], stream: Iterable[int], waits: Iterable[Iterable[int]], n_streams: int
) -> tuple[tuple[str, ...], tuple[int, ...], tuple[tuple[int, ...], ...], int]:
    """The fields of a Schedule as tuples of plain ints (waits sorted, without repeats), or
    one ConfigError naming the first thing that makes them no schedule."""
    try:
        names, raw_streams = tuple(nodes), tuple(stream)
        raw_waits = [tuple(w) for w in waits]
    except TypeError:
        raise ConfigError(
            "Schedule needs nodes (names), stream (one int per node) and waits (one sequence "
            "of node indices per node); or build one with stream_schedule, serial_schedule "
            "or schedule_from_streams"
        ) from None
    n = len(names)
    if len(raw_streams) != n or len(raw_waits) != n:
        raise ConfigError(
            f"Schedule: {n} nodes but {len(raw_streams)} stream numbers and {len(raw_waits)} "
            "wait lists; give one of each per node"
        )
    if not all(isinstance(name, str) for name in names):
        raise ConfigError("Schedule: nodes must be the graph's node names (strings)")
    if len(set(names)) != n:
        twice = sorted(name for name, k in Counter(names).items() if k > 1)
        raise ConfigError(f"Schedule: node names {twice[:3]} appear more than once")
    count = _as_int(n_streams)
    if count is None or count < 1:
        raise ConfigError(f"Schedule: n_streams must be a positive integer, got {n_streams!r}")
    streams: list[int] = []
    for i, x in enumerate(raw_streams):
        s = x if type(x) is int else _as_int(x)
        if s is None or not 0 <= s < count:
            raise ConfigError(
                f"Schedule: node {i} ({names[i]!r}) is on stream {x!r}; stream numbers are "
                f"integers in 0..{count - 1} (n_streams={count})"
            )
        streams.append(s)
    used = max(streams, default=0) + 1
    if n and used != count:
        raise ConfigError(
            f"Schedule: n_streams={count} but the nodes use streams 0..{used - 1}; "
            f"set n_streams={used}"
        )
    out = tuple(_checked_waits(i, w, names, streams) for i, w in enumerate(raw_waits))
    return names, tuple(streams), out, count


def _checked_waits(
    i: int, raw: tuple[object, ...], names: tuple[str, ...], streams: list[int]
) -> tuple[int, ...]:
    """Node i's waits as sorted distinct ints, or a ConfigError naming the bad one."""
    waits = []
    for x in raw:
        j = x if type(x) is int else _as_int(x)
        if j is None or j < 0:
            problem = f"{x!r}, which is not a node index"
        elif j >= i:
            problem = "itself" if j == i else f"node {j}, which comes later"
        elif streams[j] == streams[i]:
            raise ConfigError(
                f"Schedule: node {i} ({names[i]!r}) waits for node {j} ({names[j]!r}) on its "
                f"own stream {streams[i]}; a stream runs its nodes in order, so drop that wait"
            )
        else:
            waits.append(j)
            continue
        raise ConfigError(
            f"Schedule: node {i} ({names[i]!r}) waits for {problem}; a node waits only for "
            "earlier nodes, given by their index"
        )
    if all(a < b for a, b in pairwise(waits)):
        return tuple(waits)
    return tuple(sorted(set(waits)))


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
