"""Packaging: the pip and conda descriptions of LACE agree, and the package ships what it needs.

pyproject.toml serves `pip install -e .`, environment.yml serves conda users; each lists the
runtime dependencies by hand, so this test keeps the two lists (names and version floors) in
step. It also pins the `lace` console script, the CUDA kernel sources shipped as package data,
and the rule that kernels are data under `concurrency/`, not a top-level `kernels` package.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]

# conda-forge name -> PyPI name, where they differ.
CONDA_TO_PYPI = {"python-graphviz": "graphviz"}
# conda packages with no PyPI counterpart in pyproject's dependencies: the interpreter, pip
# itself, and conda-forge's "graphviz", which is the C program that provides `dot`.
CONDA_ONLY = {"python", "pip", "graphviz"}


def _pyproject() -> dict[str, Any]:
    """pyproject.toml, parsed."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def _conda_specs() -> list[str]:
    """The plain conda package specs of environment.yml (its nested `pip:` list excluded)."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    return [dep for dep in env["dependencies"] if isinstance(dep, str)]


def _split_conda(spec: str) -> tuple[str, str]:
    """A conda spec such as `numpy >=1.26` split into canonical name and version part."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", spec)
    assert match, f"environment.yml: cannot read a package name from {spec!r}"
    return canonicalize_name(match.group(1)), match.group(2).replace(" ", "")


def _versions(requirements: list[Requirement]) -> dict[str, str]:
    """Canonical package name -> its version specifier, as text (e.g. ">=1.26")."""
    return {canonicalize_name(req.name): str(req.specifier) for req in requirements}


def _pip_side() -> dict[str, str]:
    """pyproject's runtime dependencies: name -> version specifier."""
    return _versions([Requirement(dep) for dep in _pyproject()["project"]["dependencies"]])


def _conda_side() -> dict[str, str]:
    """environment.yml's packages under their PyPI names, conda-only ones dropped."""
    requirements = []
    for spec in _conda_specs():
        name, version = _split_conda(spec)
        if name not in CONDA_ONLY:
            requirements.append(Requirement(f"{CONDA_TO_PYPI.get(name, name)}{version}"))
    return _versions(requirements)


def test_environment_yml_and_pyproject_list_the_same_packages() -> None:
    """Same package names on both sides, so neither install path misses a dependency."""
    pip_side, conda_side = _pip_side(), _conda_side()
    assert sorted(conda_side) == sorted(pip_side), (
        f"only in pyproject.toml: {sorted(set(pip_side) - set(conda_side))}; "
        f"only in environment.yml: {sorted(set(conda_side) - set(pip_side))}"
    )


def test_environment_yml_and_pyproject_have_the_same_version_floors() -> None:
    """Same version specifiers on both sides, so both installs get compatible versions."""
    pip_side, conda_side = _pip_side(), _conda_side()
    shared = set(pip_side) & set(conda_side)
    differ = {n: (pip_side[n], conda_side[n]) for n in shared if pip_side[n] != conda_side[n]}
    assert not differ, f"version specifiers differ (pyproject, environment.yml): {differ}"


def test_environment_yml_needs_dot_and_the_same_python() -> None:
    """conda users get the `dot` program and the Python floor pyproject requires."""
    specs = dict(_split_conda(spec) for spec in _conda_specs())
    assert "graphviz" in specs, "environment.yml must list conda-forge's graphviz (dot)"
    assert specs.get("python") == _pyproject()["project"]["requires-python"].replace(" ", "")


def test_lace_console_script_is_declared() -> None:
    """`lace` is installed as a command that runs concurrency.cli:main."""
    assert _pyproject()["project"]["scripts"].get("lace") == "concurrency.cli:main"


def test_cuda_kernel_sources_are_package_data() -> None:
    """concurrency/kernels/*.cu ship inside the wheel, next to the code that compiles them."""
    package_data = _pyproject()["tool"]["setuptools"]["package-data"]
    assert "kernels/*.cu" in package_data.get("concurrency", [])


def test_no_top_level_kernels_package() -> None:
    """Kernels live under concurrency/; a top-level `kernels` package would clash on install."""
    assert not (ROOT / "kernels" / "__init__.py").exists()
    includes = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    assert all(pattern.startswith("concurrency") for pattern in includes)
