"""The vendored llama.cpp cut down to what the device builds: ggml (CPU + CUDA), libllama,
common, llama-batched-bench, llama-bench and test-backend-ops, plus the `gguf` Python package.

The source is the `vendor/llama.cpp` folder of the llama-cpp-python 0.3.36 sdist (176 MB);
the device carries at most 64 MiB with the repository and the wheels. `plan_trim` decides,
path by path, what is dropped (documentation, models, other backends, other tools, the tests
other than test-backend-ops); three CMake lists are rewritten so that configuring never asks
for a dropped folder (`tools/`, `vendor/`, `tests/`). The library and tool sources are not
touched: the only source change on the device is the test-backend-ops patch
(scripts/peers/test-backend-ops-gdn.patch), applied there.

`python -m concurrency.peers.trim SRC DST` writes the trimmed copy and `LACE-TRIM.json` (source,
version, dropped paths, rewritten files, size).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from concurrency.errors import LaceError

#: Where the source comes from (recorded in LACE-TRIM.json and in every peers result).
SOURCE = "llama-cpp-python 0.3.36 sdist, vendor/llama.cpp"
LLAMA_CPP_COMMIT = "0c1e57098"  # llama-cpp-python's CHANGELOG for 0.3.36
GGML_VERSION = "0.25.3"

#: Whole folders (or files) never needed to configure and build the three targets.
DROP = (
    ".devops",
    ".gemini",
    ".git",  # a gitlink into the sdist's (absent) repository
    ".github",
    ".pi",
    "app",
    "benches",
    "ci",
    "conversion",
    "docs",
    "examples",
    "gguf-py/examples",
    "gguf-py/tests",
    "grammars",
    "media",
    "models",
    "pocs",
    "requirements",
    "scripts",
    "skills",
    "vendor/hash",
    "vendor/miniaudio",
    "vendor/stb",
    "ggml/src/ggml-cpu/kleidiai",
    "ggml/src/ggml-cpu/spacemit",
)
#: Top-level files dropped by pattern (converters, editor and CI configuration).
DROP_TOP_FILES = re.compile(r"^(convert_.*\.py|build-xcframework\.sh|flake\.nix|.*\.md)$")
#: Files kept although DROP_TOP_FILES matches them.
KEEP_TOP_FILES = ("README.md",)

#: ggml backends kept; every other `ggml/src/ggml-<name>/` folder is dropped (CMake adds a
#: backend's folder only when its GGML_<NAME> option is on).
KEEP_BACKENDS = ("ggml-cpu", "ggml-cuda")
#: CPU architectures kept under ggml/src/ggml-cpu/arch (the device is x86-64).
KEEP_CPU_ARCH = ("x86",)
#: tools/ kept; their CMakeLists.txt is filtered to add only these.
KEEP_TOOLS = ("batched-bench", "llama-bench")
#: tests/ kept: test-backend-ops' one source file (tests/CMakeLists.txt is rewritten).
KEEP_TESTS = ("test-backend-ops.cpp",)

#: tests/CMakeLists.txt after trimming: test-backend-ops only, linked as upstream links it.
TESTS_CMAKE = """\
# LACE trim: only test-backend-ops (the other tests and their data were dropped)
llama_add_compile_flags()

add_executable(test-backend-ops test-backend-ops.cpp)
target_link_libraries(test-backend-ops PRIVATE llama llama-common)
"""

#: The three targets the device builds.
TARGETS = ("llama-batched-bench", "llama-bench", "test-backend-ops")

#: The device's configure flags (device-recipes.md), tests on for test-backend-ops.
CMAKE_FLAGS = (
    "-G",
    "Ninja",
    "-DGGML_CUDA=ON",
    "-DCMAKE_CUDA_ARCHITECTURES=90",
    "-DGGML_CUDA_FA=OFF",
    "-DGGML_NATIVE=OFF",
    "-DGGML_CUDA_NCCL=OFF",
    "-DGGML_CCACHE=OFF",
    "-DLLAMA_BUILD_TESTS=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DCMAKE_BUILD_TYPE=Release",
    f"-DLLAMA_BUILD_COMMIT={LLAMA_CPP_COMMIT}",
    "-DLLAMA_BUILD_NUMBER=0",
)


@dataclass(frozen=True)
class TrimPlan:
    """What trimming does to one source tree: paths (POSIX, relative) dropped, and the CMake
    lists rewritten (path → new text)."""

    drop: tuple[str, ...]
    rewrite: tuple[tuple[str, str], ...]


def _is_dropped(rel: PurePosixPath, top_files: Iterable[str]) -> bool:
    parts = rel.parts
    text = rel.as_posix()
    if any(text == d or text.startswith(d + "/") for d in DROP):
        return True
    if len(parts) == 1 and parts[0] in top_files:
        return True
    if parts[:2] == ("ggml", "src") and len(parts) >= 3:
        name = parts[2]
        if name.startswith("ggml-") and "." not in name and name not in KEEP_BACKENDS:
            return True
        if parts[2:4] == ("ggml-cpu", "arch") and len(parts) >= 5:
            return parts[4] not in KEEP_CPU_ARCH
    if parts[0] == "tools" and len(parts) >= 2:
        return parts[1] != "CMakeLists.txt" and parts[1] not in KEEP_TOOLS
    if parts[0] == "tests" and len(parts) >= 2:
        return parts[1] != "CMakeLists.txt" and parts[1] not in KEEP_TESTS
    return False


def filter_subdirectories(cmake_text: str, dropped: Iterable[str]) -> str:
    """`cmake_text` without the `add_subdirectory(NAME)` lines of dropped folders (the
    surrounding `if` blocks stay, empty blocks are valid CMake)."""
    names = set(dropped)
    out = []
    for line in cmake_text.splitlines(keepends=True):
        m = re.match(r"\s*add_subdirectory\(\s*([\w.\-/]+)\s*\)", line)
        if m and m.group(1) in names:
            out.append(line[: len(line) - len(line.lstrip())] + f"# LACE trim: {line.strip()}\n")
            continue
        out.append(line)
    return "".join(out)


def plan_trim(paths: Iterable[str], read_text: dict[str, str]) -> TrimPlan:
    """Decide the trim of a tree given its files (`paths`, POSIX, relative to the root) and
    the text of the CMake lists it rewrites (`read_text`: `tools/CMakeLists.txt`,
    `vendor/CMakeLists.txt`). Dropped folders are reported once, at their top."""
    files = sorted(set(paths))
    if "CMakeLists.txt" not in files or not any(p.startswith("ggml/src/ggml-cuda/") for p in files):
        raise LaceError(
            "this is not the vendored llama.cpp (no CMakeLists.txt or ggml/src/ggml-cuda); "
            "pass the sdist's vendor/llama.cpp folder"
        )
    top_files = {
        p for p in files if "/" not in p and DROP_TOP_FILES.match(p) and p not in KEEP_TOP_FILES
    }
    dropped: set[str] = set()
    for p in files:
        rel = PurePosixPath(p)
        if not _is_dropped(rel, top_files):
            continue
        # report the highest dropped ancestor
        top = rel
        for parent in reversed(rel.parents[:-1]):
            if _is_dropped(parent, top_files):
                top = parent
                break
        dropped.add(top.as_posix())
    missing = [t for t in KEEP_TOOLS if not any(p.startswith(f"tools/{t}/") for p in files)]
    missing += [t for t in KEEP_TESTS if f"tests/{t}" not in files]
    if missing:
        raise LaceError(f"the source lacks {missing}; it is not the expected llama.cpp version")
    tool_dirs = {p.split("/")[1] for p in files if p.startswith("tools/") and p.count("/") >= 2}
    vendor_dirs = {p.split("/")[1] for p in files if p.startswith("vendor/") and p.count("/") >= 2}
    rewrite = (
        (
            "tools/CMakeLists.txt",
            filter_subdirectories(read_text["tools/CMakeLists.txt"], tool_dirs - set(KEEP_TOOLS)),
        ),
        (
            "vendor/CMakeLists.txt",
            filter_subdirectories(
                read_text["vendor/CMakeLists.txt"],
                {d.split("/")[1] for d in DROP if d.startswith("vendor/")} & vendor_dirs,
            ),
        ),
        ("tests/CMakeLists.txt", TESTS_CMAKE),
    )
    return TrimPlan(drop=tuple(sorted(dropped)), rewrite=rewrite)


def _tree_files(root: Path) -> list[str]:
    found = root.rglob("*")
    return [p.relative_to(root).as_posix() for p in found if p.is_file() or p.is_symlink()]


def _size_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def trim_tree(src: Path, dst: Path) -> dict[str, object]:
    """Copy `src` (the vendored llama.cpp) to `dst` without the dropped paths, rewrite the
    CMake lists, write `dst/LACE-TRIM.json` and return what it holds."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise LaceError(f"{src} is not a folder; pass the sdist's vendor/llama.cpp")
    if dst.exists() and any(dst.iterdir()):
        raise LaceError(f"{dst} exists and is not empty; remove it or name another folder")
    files = _tree_files(src)
    texts = {
        name: (src / name).read_text(encoding="utf-8")
        for name in ("tools/CMakeLists.txt", "vendor/CMakeLists.txt")
    }
    plan = plan_trim(files, texts)
    dropped = set(plan.drop)

    def keep(rel: str) -> bool:
        return not any(rel == d or rel.startswith(d + "/") for d in dropped)

    for rel in files:
        if keep(rel):
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, target, follow_symlinks=False)
    for rel, text in plan.rewrite:
        (dst / rel).write_text(text, encoding="utf-8")
    info: dict[str, object] = {
        "source": SOURCE,
        "llama_cpp_commit": LLAMA_CPP_COMMIT,
        "ggml_version": GGML_VERSION,
        "dropped": list(plan.drop),
        "rewritten": [rel for rel, _ in plan.rewrite],
        "targets": list(TARGETS),
        "cmake_flags": list(CMAKE_FLAGS),
        "source_bytes": _size_bytes(src),
    }
    info["trimmed_bytes"] = _size_bytes(dst) + len(json.dumps(info)) + 64
    (dst / "LACE-TRIM.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m concurrency.peers.trim",
        description="Copy the vendored llama.cpp without what the device build does not need.",
    )
    ap.add_argument("src", type=Path, help="the sdist's vendor/llama.cpp folder")
    ap.add_argument("dst", type=Path, help="an empty or new folder")
    args = ap.parse_args(argv)
    try:
        info = trim_tree(args.src, args.dst)
    except LaceError as exc:
        print(f"trim: error: {exc}", file=sys.stderr)
        return 2
    mb = 1e6
    print(
        f"{args.dst}: {info['trimmed_bytes'] / mb:.1f} MB "  # type: ignore[operator]
        f"(from {info['source_bytes'] / mb:.1f} MB), {len(info['dropped'])} paths dropped"  # type: ignore[arg-type,operator]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
