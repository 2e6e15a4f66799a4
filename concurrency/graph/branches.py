"""Branch detection: where a layer forks into independent chains that streams could overlap.

Two detectors over the same `Graph`:

* `general` — LACE's: any node whose result feeds two or more independent chains is a fork;
  chains may rejoin at different nodes (the GDN layer joins q/k/v, alpha and beta at the fused
  GDN op and z only at the gated norm), nodes between fork and join that depend on no branch
  (state gathers) are kept on the main stream, and any batch size works.
* `ggml` — a port of ggml-cuda's `ggml_backend_cuda_graph_optimize` detector as vendored in
  llama-cpp-python 0.3.36: fan-out counted only from one-row consumers, fan-out exactly 3, the
  fork's name must contain `attn_norm`, the join is the first node that depends on two
  branches, and every node between fork and join must belong to a branch. It reports *why*
  it rejects a candidate.

Dependencies for the general detector come from `concurrency.graph.deps` (data edges plus ordering
on caches); the ggml port uses ggml's own notion (a source, or the same `view_src`).
"""

from __future__ import annotations

from dataclasses import dataclass

from concurrency.errors import UnknownNameError
from concurrency.graph.ir import VIEW_OPS, Graph

DETECTORS = ("general", "ggml")


@dataclass(frozen=True)
class Branch:
    """One chain of a fork region: its nodes in graph order and the node that joins it."""

    nodes: tuple[str, ...]
    join: str


@dataclass(frozen=True)
class ForkRegion:
    """A fork, its branches, and the nodes between fork and last join that stay on the main
    stream (independent work such as state gathers, and work after an earlier join)."""

    fork: str
    branches: tuple[Branch, ...]
    main_nodes: tuple[str, ...]
    end: str
    detector: str

    @property
    def joins(self) -> tuple[str, ...]:
        """Distinct join nodes in graph order of first appearance."""
        return tuple(dict.fromkeys(b.join for b in self.branches))

    def stream_of(self) -> dict[str, int]:
        """Node → branch number (1-based); main-stream nodes are not listed."""
        return {n: k for k, b in enumerate(self.branches, 1) for n in b.nodes}


@dataclass(frozen=True)
class Rejection:
    """A fork candidate a detector turned down, and why (one sentence)."""

    fork: str
    reason: str


@dataclass(frozen=True)
class BranchReport:
    """What a detector found in a graph."""

    detector: str
    regions: tuple[ForkRegion, ...]
    rejections: tuple[Rejection, ...]

    def region_at(self, fork: str) -> ForkRegion | None:
        return next((r for r in self.regions if r.fork == fork), None)

    def to_dict(self) -> dict[str, object]:
        return {
            "detector": self.detector,
            "regions": [
                {
                    "fork": r.fork,
                    "joins": list(r.joins),
                    "end": r.end,
                    "branches": [{"nodes": list(b.nodes), "join": b.join} for b in r.branches],
                    "main_nodes": list(r.main_nodes),
                }
                for r in self.regions
            ],
            "rejections": [{"fork": x.fork, "reason": x.reason} for x in self.rejections],
        }


def detect_branches(graph: Graph, detector: str = "general") -> BranchReport:
    """Run the named detector ("general" or "ggml") over `graph`."""
    if detector == "general":
        return _detect_general(graph)
    if detector == "ggml":
        return _detect_ggml(graph)
    raise UnknownNameError("detector", detector, DETECTORS)


def is_noop(graph: Graph, name: str) -> bool:
    """ggml-cuda's no-op: an empty tensor, a leaf, or a pure view op."""
    t = graph[name]
    return t.is_empty or t.op == "NONE" or t.op in VIEW_OPS


# ---------------------------------------------------------------------------- general
def _detect_general(graph: Graph) -> BranchReport:
    deps = graph.dependencies
    last_user = [-1] * len(graph.nodes)  # the last node that depends on each node
    for i, d in enumerate(deps):
        for j in d:
            last_user[j] = i
    noop = [is_noop(graph, n) for n in graph.nodes]
    regions: list[ForkRegion] = []
    rejections: list[Rejection] = []
    region_end = -1
    for f, fork in enumerate(graph.nodes):
        if noop[f]:
            continue
        seeds = _real_consumers(graph, fork)
        if len(seeds) < 2:
            continue
        if f <= region_end:
            rejections.append(
                Rejection(
                    fork,
                    f"lies inside the region of an earlier fork "
                    f"(ending at {graph.nodes[region_end]!r})",
                )
            )
            continue
        region = _grow_region(graph, f, seeds, deps, last_user, noop)
        if region is None:
            continue  # every consumer chain depends on the first: one branch, no fork
        regions.append(region)
        region_end = graph.index[region.end]
    return BranchReport("general", tuple(regions), tuple(rejections))


def _real_consumers(graph: Graph, fork: str) -> list[int]:
    """Indices of the non-view nodes that read `fork` directly or through views of it."""
    out: set[int] = set()
    stack = [fork]
    while stack:
        for c in graph.consumers[stack.pop()]:
            if is_noop(graph, c):
                stack.append(c)
            else:
                out.add(graph.index[c])
    return sorted(out)


def _grow_region(
    graph: Graph,
    f: int,
    seeds: list[int],
    deps: tuple[tuple[int, ...], ...],
    last_user: list[int],
    noop: list[bool],
) -> ForkRegion | None:
    """Label nodes after the fork with the branch they belong to, until every branch is
    joined. A node's label set is the union over its dependencies; a seed that depends on no
    branch opens a new one; a node depending on ≥ 2 open branches (or on a joined result and
    an open branch) joins them."""
    OPEN_NONE, JOINED = 0, -1  # label values besides branch numbers 1..k
    label: dict[int, int] = {f: OPEN_NONE}
    aliases = {f}  # views of the fork behave like the fork
    branches: list[list[int]] = []
    joins: dict[int, int] = {}
    main: list[int] = []
    pending = set(seeds)
    last = max(seeds)
    reach: list[int] = []  # per branch: the last node that depends on one of its nodes
    i = f
    while i + 1 < len(graph.nodes):
        i += 1
        if i > last and len(branches) < 2:
            return None  # every consumer chain depends on the first: one branch, no fork
        if i > last and all(b in joins or reach[b - 1] < i for b in range(1, len(branches) + 1)):
            break  # every branch joined, or no later node can still join it
        src_labels = {label.get(j, OPEN_NONE) for j in deps[i]}
        open_branches = {b for b in src_labels if b > 0 and b not in joins}
        after_join = JOINED in src_labels or any(b in joins for b in src_labels if b > 0)
        if i in pending and not open_branches:
            branches.append([i])
            reach.append(last_user[i])
            label[i] = len(branches)
            pending.discard(i)
            continue
        pending.discard(i)
        if noop[i] and any(j in aliases for j in deps[i]) and not open_branches:
            aliases.add(i)
            label[i] = OPEN_NONE
            main.append(i)
            continue
        if len(open_branches) >= 2 or (open_branches and after_join):
            for b in open_branches:
                joins[b] = i
            label[i] = JOINED
            main.append(i)
        elif len(open_branches) == 1:
            (b,) = open_branches
            branches[b - 1].append(i)
            reach[b - 1] = max(reach[b - 1], last_user[i])
            label[i] = b
        else:
            label[i] = JOINED if after_join else OPEN_NONE
            main.append(i)
    # A chain that never rejoins before the graph ends has no join to wait on: it is not a
    # branch of this region, and its nodes stay on the main stream.
    kept = [k for k in range(1, len(branches) + 1) if k in joins]
    if len(kept) < 2:
        return None
    end = max(joins[k] for k in kept)
    dropped = {j for k in range(1, len(branches) + 1) if k not in joins for j in branches[k - 1]}
    join_nodes = {joins[k] for k in kept}
    nodes = graph.nodes
    return ForkRegion(
        fork=nodes[f],
        branches=tuple(
            Branch(tuple(nodes[j] for j in branches[k - 1]), nodes[joins[k]]) for k in kept
        ),
        main_nodes=tuple(
            nodes[j] for j in sorted({*main, *dropped}) if j <= end and j not in join_nodes
        ),
        end=nodes[end],
        detector="general",
    )


# ---------------------------------------------------------------------------- ggml port
def _ggml_depends_on(graph: Graph, dst: str, src: str) -> bool:
    """ggml-cuda's depends_on: a direct source, or both resolve to the same view_src."""
    if src in graph[dst].srcs:
        return True
    return graph.base(dst) == graph.base(src)


def _detect_ggml(graph: Graph) -> BranchReport:
    nodes = graph.nodes
    fan_out: dict[str, int] = {}
    wide_consumers: dict[str, int] = {}
    for name in nodes:
        if is_noop(graph, name):
            continue
        t = graph[name]
        for s in t.srcs:
            if t.nrows <= 1:
                fan_out[s] = fan_out.get(s, 0) + 1
            else:
                wide_consumers[s] = wide_consumers.get(s, 0) + 1
    regions: list[ForkRegion] = []
    rejections: list[Rejection] = []
    ranges: list[tuple[int, int]] = []
    # ggml iterates a hash map; LACE visits candidates in node order so results are stable.
    candidates = [n for n in nodes if fan_out.get(n, 0) + wide_consumers.get(n, 0) >= 2]
    for root in candidates:
        count = fan_out.get(root, 0)
        wide = wide_consumers.get(root, 0)
        is_attn_norm = "attn_norm" in graph[root].ggml_name or "attn_norm" in root
        if count != 3:
            if is_attn_norm:
                why = f"fan-out {count} from one-row consumers; ggml-cuda needs exactly 3"
                if wide:
                    why += (
                        f" ({wide} consumer(s) with more than one row are not counted: "
                        "the detector only handles single-token graphs)"
                    )
                rejections.append(Rejection(root, why))
            continue
        if not is_attn_norm:
            rejections.append(
                Rejection(
                    root,
                    "fan-out 3, but the name does not contain "
                    "'attn_norm', the only fork ggml-cuda accepts",
                )
            )
            continue
        root_idx = graph.index[root]
        if any(start <= root_idx <= end for start, end in ranges):
            rejections.append(Rejection(root, "lies inside an already accepted region"))
            continue
        per_branch: list[list[str]] = [
            [n]
            for n in nodes[root_idx + 1 :]
            if not is_noop(graph, n) and _ggml_depends_on(graph, n, root)
        ]
        if len(per_branch) != count:
            rejections.append(
                Rejection(
                    root,
                    f"{len(per_branch)} direct dependants found for a "
                    f"fan-out of {count} (ggml asserts equality)",
                )
            )
            continue
        join = None
        for cur in nodes[root_idx + 1 :]:
            member = [b for b in per_branch if any(_ggml_depends_on(graph, cur, n) for n in b)]
            if len(member) >= 2:
                join = cur
                break
            for b in member:
                if cur not in b:
                    b.append(cur)
            if not member and is_noop(graph, cur):
                per_branch[0].append(cur)
        if join is None:
            rejections.append(Rejection(root, "no node depends on two branches: no join found"))
            continue
        join_idx = graph.index[join]
        total = sum(len(b) for b in per_branch)
        if join_idx - root_idx - 1 != total:
            in_branch = {n for b in per_branch for n in b}
            strays = [n for n in nodes[root_idx + 1 : join_idx] if n not in in_branch]
            shown = ", ".join(strays[:4]) + (" …" if len(strays) > 4 else "")
            rejections.append(
                Rejection(
                    root,
                    f"{join_idx - root_idx - 1} nodes lie between fork and join {join!r} but only "
                    f"{total} belong to a branch (not in any branch: {shown})",
                )
            )
            continue
        ranges.append((root_idx, join_idx))
        regions.append(
            ForkRegion(
                fork=root,
                branches=tuple(Branch(tuple(b), join) for b in per_branch),
                main_nodes=(),
                end=join,
                detector="ggml",
            )
        )
    return BranchReport("ggml", tuple(regions), tuple(rejections))
