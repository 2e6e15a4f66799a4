"""The public API: `import concurrency` is light, its curated names resolve, its version is
the package's one version, and a Graph behaves as a value (membership, iteration, hashing)."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

import concurrency
from concurrency.graph.builders import build_graph

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("numpy", "pandas", "pyarrow", "altair", "graphviz", "ipywidgets", "yaml")
# check_plan (formerly check_hazards).
PENDING = {"check_plan"}


def _check_plan_exists() -> bool:
    return hasattr(importlib.import_module("concurrency.memory.check"), "check_plan")


def test_import_concurrency_loads_no_heavy_library() -> None:
    """A fresh interpreter: `import concurrency` (and listing its names) imports none of the
    numeric, plotting, widget or YAML libraries, nor any LACE submodule."""
    code = (
        "import sys, json, concurrency; dir(concurrency); "
        "print(json.dumps(sorted(m for m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = set(json.loads(out.stdout))
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}
    assert not {m for m in loaded if m.startswith("concurrency.")}


def test_reading_a_preset_loads_no_heavy_library() -> None:
    """`lace models` and `get_config` need only the config modules."""
    code = (
        "import sys, json, concurrency; concurrency.get_config('qwen3.5-27b'); "
        "print(json.dumps(sorted(m for m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert not {m for m in json.loads(out.stdout) if m.split(".")[0] in HEAVY}


@pytest.mark.parametrize("name", sorted(set(concurrency.__all__) - {"__version__"}))
def test_every_exported_name_resolves_to_its_home_object(name: str) -> None:
    if name in PENDING and not _check_plan_exists():
        pytest.xfail(f"{name} is not in this tree yet (renamed by a parallel change)")
    value = getattr(concurrency, name)
    home = importlib.import_module(concurrency._LAZY[name])
    assert value is getattr(home, name)
    assert name in dir(concurrency)


def test_the_curated_api_covers_a_notebook_session() -> None:
    lace = concurrency
    graph = lace.build_graph("tiny", "gdn", "decode", 1)
    report = lace.detect_branches(graph)
    schedule = lace.stream_schedule(graph, report)
    plan = lace.plan_memory(graph, schedule, report, "happens_before")
    assert isinstance(plan, lace.MemoryPlan) and isinstance(schedule, lace.Schedule)
    assert lace.lower_bound(graph, schedule).bytes <= plan.arena_bytes
    assert set(lace.POLICIES) >= {"sequential", "happens_before"}
    assert lace.get_config("tiny") is lace.PRESETS["tiny"]


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'build_graf'"):
        concurrency.build_graf  # noqa: B018
    assert not hasattr(concurrency, "_private")
    from concurrency import graph  # subpackages still import as usual

    assert graph.__name__ == "concurrency.graph"


def test_version_is_a_literal_that_pyproject_reads() -> None:
    """pyproject.toml takes its version from `concurrency.__version__`; setuptools reads it
    statically only when it is a plain string assignment, so builds never import LACE."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "concurrency.__version__"
    }
    tree = ast.parse((ROOT / "concurrency" / "__init__.py").read_text())
    literals = [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
        and isinstance(node.value, ast.Constant)
    ]
    assert literals == [concurrency.__version__]
    Version(concurrency.__version__)  # a valid PEP 440 version


def test_installed_metadata_agrees_when_installed_from_this_checkout() -> None:
    """An install made from this checkout reports the same version as the package."""
    try:
        dist = importlib.metadata.distribution("lace-kit")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("lace-kit is not installed; the checkout is used from sys.path")
    url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
    if Path(url.removeprefix("file://")).resolve() != ROOT:
        pytest.skip(f"the installed lace-kit comes from {url or 'an index'}, not this checkout")
    assert dist.version == concurrency.__version__


# --- Graph as a value ----------------------------------------------------------------------


def test_graph_membership_and_iteration() -> None:
    g = build_graph("tiny", "gdn")
    assert g.nodes[0] in g and g.leafs[0] in g  # nodes and leafs are both tensors of g
    assert "x" not in g and "" not in g and 5 not in g
    assert list(g) == list(g.nodes) and len(g) == len(g.nodes)


def test_equal_graphs_hash_equal_and_work_as_keys() -> None:
    a, b = build_graph("tiny", "gdn"), build_graph("tiny", "gdn")
    assert a is not b and a == b and hash(a) == hash(b)
    other = build_graph("tiny", "attn")
    bigger = build_graph("tiny", "gdn", batch=2)
    assert other != a and bigger != a
    cache = {a: "gdn", other: "attn"}
    assert cache[b] == "gdn" and len({a, b, other, bigger}) == 3
