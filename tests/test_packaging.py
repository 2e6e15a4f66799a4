"""Packaging: the pip and conda descriptions of LACE agree, and the package ships what it needs.

pyproject.toml serves `pip install -e .`, environment.yml serves conda users; each lists the
runtime dependencies by hand, so this test keeps the two lists (names and version floors) in
step. It also pins the `lace` console script, the CUDA kernel sources shipped as package data,
and the rule that kernels are data under `concurrency/`, not a top-level `kernels` package.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
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


def test_gpu_extras_for_cuda_13_and_cuda_12() -> None:
    """`gpu` installs the CUDA 13 stack (the lent device), `gpu-cuda12` the CUDA 12 one."""
    extras = _pyproject()["project"]["optional-dependencies"]
    names = {k: {canonicalize_name(Requirement(r).name) for r in v} for k, v in extras.items()}
    assert names["gpu"] == {"cupy-cuda13x", "nvmath-python", "cupti-python"}
    assert names["gpu-cuda12"] == {"cupy-cuda12x", "nvmath-python", "cupti-python"}
    cupti12 = next(Requirement(r) for r in extras["gpu-cuda12"] if r.startswith("cupti"))
    assert "13.0" not in cupti12.specifier and "12.6" in cupti12.specifier


def _source_tree(dest: Path) -> Path:
    """A copy of what the build backend reads (symlinks kept, caches dropped)."""
    src = dest / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "concurrency", src / "concurrency", symlinks=True, ignore=ignore)
    shutil.copytree(ROOT / "kernels", src / "kernels", ignore=ignore)
    return src


def _build_wheel(src: Path, out: Path) -> Path:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 and "bdist_wheel" in done.stdout + done.stderr:
        pytest.skip(
            "building a wheel needs the 'wheel' package or setuptools ≥ 70.1 (pip install wheel)"
        )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = out.glob("*.whl")
    return wheel


def _kernel_files() -> set[str]:
    return {p.name for p in (ROOT / "kernels").iterdir() if p.suffix in (".cu", ".cuh")}


def test_wheel_ships_every_kernel_source(tmp_path: Path) -> None:
    """The wheel holds every kernels/*.cu (and the shared header) as concurrency/kernels/ data,
    real files resolved through the source tree's symlink, and no top-level kernels package."""
    wheel = _build_wheel(_source_tree(tmp_path), tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.split("/")[-1] for n in names if n.startswith("concurrency/kernels/")}
    assert shipped == _kernel_files()
    assert not any(n.startswith("kernels/") for n in names)
    assert "concurrency/execute/gpu/runner.py" in names


def test_sdist_carries_the_kernels_and_rebuilds_a_wheel(tmp_path: Path) -> None:
    """The sdist stores the kernels as regular files under concurrency/kernels/, and a wheel
    built from the unpacked sdist ships them too."""
    src = _source_tree(tmp_path)
    code = (
        f"from setuptools import build_meta as b; print(b.build_sdist({str(tmp_path / 'sdist')!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (sdist,) = (tmp_path / "sdist").glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if "/concurrency/kernels/" in m.name]
        assert {m.name.split("/")[-1] for m in members if m.isfile()} == _kernel_files()
        try:
            tar.extractall(tmp_path / "unpacked", filter="data")
        except TypeError:  # Python < 3.10.12 has no extraction filters; this is our own sdist
            tar.extractall(tmp_path / "unpacked")
    (root,) = (tmp_path / "unpacked").iterdir()
    wheel = _build_wheel(root, tmp_path / "dist2")
    names = zipfile.ZipFile(wheel).namelist()
    assert {
        n.split("/")[-1] for n in names if n.startswith("concurrency/kernels/")
    } == _kernel_files()


def test_checkout_finds_the_kernels_through_the_symlink() -> None:
    """An editable install (or this checkout on PYTHONPATH) reads the top-level kernels/ folder."""
    from concurrency.execute.gpu.kernels import kernel_dir

    assert (ROOT / "concurrency" / "kernels").is_symlink()
    assert kernel_dir().resolve() == (ROOT / "kernels").resolve()
