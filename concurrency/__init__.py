"""LACE, the Linear-Attention Concurrency Explorer.

The names a notebook needs, from one place::

    import concurrency as lace

    graph = lace.build_graph("qwen3.5-27b", "gdn", "decode", batch=1)
    report = lace.detect_branches(graph)
    schedule = lace.stream_schedule(graph, report)
    plan = lace.plan_memory(graph, schedule, report, "happens_before")
    floor = lace.lower_bound(graph, schedule)   # no plan can use fewer bytes

Each name is imported on first use (PEP 562), so `import concurrency` stays instant and
loads no NumPy, pandas, Altair, Graphviz or widget library until a name needs one. The
subpackages are the pipeline's stages: `graph` (configs, graphs, branches, schedules),
`memory` (plans, policies, checks), `timing` (costs, simulator, timelines), `execute`,
`oracle` (the real ggml) and `render` (charts, drawings, the dashboard).
"""

from __future__ import annotations

import importlib
from typing import Any

# The single source of the version: pyproject.toml reads it from here (a dynamic version),
# so a checkout on sys.path, an editable install and a wheel all report the same one.
__version__ = "0.1.0"

# name → the module that defines it; imported on first access.
_LAZY: dict[str, str] = {
    # errors
    "LaceError": "concurrency.errors",
    "ConfigError": "concurrency.errors",
    # stage 1: configs, graphs, branches, schedules
    "ModelConfig": "concurrency.graph.config",
    "PRESETS": "concurrency.graph.config",
    "get_config": "concurrency.graph.config",
    "load_config": "concurrency.graph.config_file",
    "Graph": "concurrency.graph.ir",
    "build_graph": "concurrency.graph.builders",
    "BranchReport": "concurrency.graph.branches",
    "detect_branches": "concurrency.graph.branches",
    "Schedule": "concurrency.graph.schedule",
    "stream_schedule": "concurrency.graph.schedule",
    "serial_schedule": "concurrency.graph.schedule",
    "schedule_from_streams": "concurrency.graph.schedule",
    # stage 2: memory plans and their checks
    "MemoryPlan": "concurrency.memory.plan",
    "POLICIES": "concurrency.memory.policies",
    "plan_memory": "concurrency.memory.policies",
    "compare_policies": "concurrency.memory.compare",
    "lower_bound": "concurrency.memory.bound",
    "check_plan": "concurrency.memory.check",
    "is_valid_ggml": "concurrency.memory.ggml.cuda_is_valid",
    # stage 3: timelines
    "GPUS": "concurrency.timing.gpus",
    "get_gpu": "concurrency.timing.gpus",
    "simulate": "concurrency.timing.simulate",
    "Timeline": "concurrency.timing.timeline",
    "compare_streams": "concurrency.timing.stream_study",
    # drawing (needs Graphviz, Altair, ipywidgets)
    "graph_dot": "concurrency.render.dot",
    "memory_map_chart": "concurrency.render.memory_map",
    "timeline_chart": "concurrency.render.timeline_chart",
    "dashboard": "concurrency.render.dashboard",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import a curated name on first access and keep it, so later lookups are plain."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'concurrency' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
