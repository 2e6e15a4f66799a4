"""One layer, every policy: the table behind `lace plan --policy all` and notebook 02."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from concurrency.branches import BranchReport
from concurrency.hazards import Hazard, check_hazards
from concurrency.ir import Graph
from concurrency.lower_bound import lower_bound
from concurrency.plan import MemoryPlan
from concurrency.policies import DEFAULT_ALIGNMENT, plan_memory
from concurrency.schedule import Schedule


@dataclass(frozen=True)
class PolicyResult:
    """A policy's plan for one graph and schedule, checked."""

    policy: str
    plan: MemoryPlan
    hazards: tuple[Hazard, ...]
    lower_bound_bytes: int
    planning_ms: float

    @property
    def arena_bytes(self) -> int:
        return self.plan.arena_bytes

    @property
    def efficiency(self) -> float:
        """lower bound / arena: 1.0 means no race-free plan can use less memory."""
        return self.lower_bound_bytes / self.arena_bytes if self.arena_bytes else 1.0

    def row(self) -> dict[str, object]:
        return {
            "policy": self.policy,
            "arena_bytes": self.arena_bytes,
            "lower_bound_bytes": self.lower_bound_bytes,
            "efficiency": round(self.efficiency, 4),
            "hazards": len(self.hazards),
            "planning_ms": round(self.planning_ms, 3),
        }


def compare_policies(
    graph: Graph,
    schedule: Schedule,
    report: BranchReport,
    policies: Sequence[str],
    alignment: int = DEFAULT_ALIGNMENT,
) -> list[PolicyResult]:
    """Plan with each policy, check every plan for hazards against the schedule, and put each
    next to the schedule's lower bound (computed once)."""
    bound = lower_bound(graph, schedule).bytes
    out = []
    for name in policies:
        start = time.perf_counter()
        plan = plan_memory(graph, schedule, report, name, alignment)
        elapsed_ms = (time.perf_counter() - start) * 1e3
        hazards = tuple(check_hazards(graph, schedule, plan))
        out.append(PolicyResult(name, plan, hazards, bound, elapsed_ms))
    return out
