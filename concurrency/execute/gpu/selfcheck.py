"""The GPU self-check: `python -m concurrency.execute.gpu.selfcheck [--out DIR]`.

One command for a GPU machine, robust so that one failure never hides the others:
1. versions (GPU, driver, CUDA, CuPy, nvmath-python, cupti-python, torch, transformers);
2. every kernel file compiled with NVRTC through CuPy (one line per file);
3. the GPU test suite (`pytest -m gpu tests/test_gpu_*.py`, never stopping at a failure), then a
   compact table: test, max relative error, tolerance, pass/fail;
4. a timing smoke: CUDA-graph replays of Qwen3.5-27B's GDN decode layer at B = 1 and of a
   4-layer 27B-width stack (vocabulary 256), one stream against the schedule's streams, median
   of N replays timed with CUDA events, next to the HBM floor; and a measured CUPTI timeline
   of the GDN layer saved as JSON.
The exit status is non-zero when a compile or a test failed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def _line(label: str, value: object) -> None:
    print(f"  {label:<22} {value}", flush=True)


def versions() -> None:
    print("== versions", flush=True)
    _line("python", sys.version.split()[0])
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        _line("gpu (nvidia-smi)", smi.stdout.strip() or smi.stderr.strip())
    except (OSError, subprocess.SubprocessError) as exc:
        _line("gpu (nvidia-smi)", f"unavailable ({exc})")
    try:
        import cupy as cp

        rt = cp.cuda.runtime
        _line("cuda runtime/driver", f"{rt.runtimeGetVersion()} / {rt.driverGetVersion()}")
        props = rt.getDeviceProperties(0)
        _line(
            "device",
            f"{props['name']!r} sm_{props['major']}{props['minor']}, "
            f"{props['multiProcessorCount']} SMs",
        )
    except Exception as exc:
        _line("cupy runtime", f"FAILED: {exc}")
    for dist in (
        "cupy-cuda13x",
        "cupy-cuda12x",
        "nvmath-python",
        "cupti-python",
        "cuda-bindings",
        "torch",
        "transformers",
        "numpy",
        "pytest",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            _line(dist, metadata.version(dist))
    for module in ("nvmath.linalg.advanced", "cupti.cupti", "torch", "transformers"):
        try:
            importlib.import_module(module)
        except Exception as exc:
            _line(
                f"import {module}",
                f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}",
            )


def compile_kernels() -> bool:
    from concurrency.execute.gpu import kernels

    print("== kernels (NVRTC through CuPy)", flush=True)
    ok = True
    for source in kernels.sources():
        t0 = time.perf_counter()
        try:
            module = kernels.module(source)
            for name in sorted(kernels.kernel_names(source)):
                module.get_function(name)
            _line(
                source,
                f"ok ({len(kernels.kernel_names(source))} kernels, "
                f"{time.perf_counter() - t0:.1f} s)",
            )
        except Exception as exc:
            ok = False
            _line(source, f"FAILED: {str(exc).splitlines()[0][:300]}")
    return ok


#: Test files whose test functions each run in their own process: a kernel that faults leaves
#: CUDA's context unusable for the rest of its process, so it must not take the others down.
SPLIT_BY_FUNCTION = ("test_gpu_kernels.py", "test_gpu_layers.py")
TARGET_TIMEOUT_S = 300


def default_tests() -> list[str]:
    """The GPU test files, kernels first (test_gpu_launch.py is CI's, GPU-free)."""
    order = ("kernels", "layers", "timeline", "transformers")
    files = [f"tests/test_gpu_{name}.py" for name in order]
    return [f for f in files if Path(f).is_file()]


def test_targets(tests: list[str]) -> list[str]:
    """pytest targets: whole files, or file::function for the files in SPLIT_BY_FUNCTION."""
    targets = []
    for path in tests:
        if Path(path).name in SPLIT_BY_FUNCTION:
            text = Path(path).read_text(encoding="utf-8")
            targets += [
                f"{path}::{m}" for m in re.findall(r"^def (test_\w+)\(", text, re.MULTILINE)
            ]
        else:
            targets.append(path)
    return targets


def _timeout(stop_at: float) -> float:
    """A target's time limit: TARGET_TIMEOUT_S, cut to a minute past the budget's end."""
    return max(30.0, min(TARGET_TIMEOUT_S, stop_at + 60.0 - time.perf_counter()))


def run_tests(out: Path, tests: list[str], extra: list[str], stop_at: float = float("inf")) -> bool:
    """pytest -m gpu, one process per target (never stopping at a failure); logs in out/.
    Targets not started by `stop_at` (time.perf_counter()) are reported and skipped, so the
    timing smoke still runs inside the machine's time limit."""
    print("== GPU tests (one process per target; logs in the output folder)", flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    ok = True
    junits = []
    t_all = time.perf_counter()
    for i, target in enumerate(test_targets(tests)):
        if time.perf_counter() > stop_at:
            ok = False
            print(f"  [--] not run (time budget): {target}", flush=True)
            continue
        junit = out / f"junit-{i:02d}.xml"
        log = out / f"pytest-{i:02d}.log"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "gpu",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "-q",
            "-rfE",
            "--tb=short",
            f"--junitxml={junit}",
            *extra,
            target,
        ]
        t0 = time.perf_counter()
        with log.open("w") as f:
            try:
                code = subprocess.run(
                    cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=_timeout(stop_at)
                ).returncode
            except subprocess.TimeoutExpired:
                code = -1
                f.write(f"\nTIMEOUT after {TARGET_TIMEOUT_S} s\n")
        lines = log.read_text(errors="replace").strip().splitlines()
        last = lines[-1] if lines else ""
        # exit 5: every test deselected (-k); not a failure
        ok &= code in (0, 5)
        print(
            f"  [{code:>2}] {time.perf_counter() - t0:5.1f} s  "
            f"{target.split('::')[-1].split('/')[-1][:46]:<46} {last[:50]}",
            flush=True,
        )
        if code not in (0, 1, 5):
            print("       " + "\n       ".join(lines[-8:]), flush=True)
        if junit.is_file():
            junits.append(junit)
    print(f"  all targets: {time.perf_counter() - t_all:.0f} s", flush=True)
    if junits:
        summary(junits, out / "results.txt")
    return ok


def summary(junits: list[Path], table: Path) -> None:
    """The full table (test, max relative error, tolerance, result) to `table`; on stdout one
    line per test function (count, worst error against its tolerance) and every failure."""
    rows = []
    cases = [c for junit in junits for c in ET.parse(junit).getroot().iter("testcase")]
    for case in cases:
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        status, message = "pass", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                status = {"failure": "FAIL", "error": "ERROR", "skipped": "skip"}[tag]
                message = " ".join((node.get("message") or node.text or "").split())[:240]
        module = case.get("classname", "").split(".")[-1].removeprefix("test_gpu_")
        name = case.get("name", "")
        rows.append(
            (
                module,
                name,
                props.get("max_rel_error", ""),
                props.get("tolerance", ""),
                status,
                message,
            )
        )
    with table.open("w") as f:
        for module, name, err, tol, status, message in rows:
            f.write(f"{module}::{name:<70} {err:>11} {tol:>7}  {status}  {message}\n")
    print(f"== results ({len(rows)} tests; full table in {table})", flush=True)
    groups: dict[str, list] = {}
    for row in rows:
        groups.setdefault(f"{row[0]}::{row[1].split('[')[0]}", []).append(row)
    for group, members in groups.items():
        counts = {}
        for m in members:
            counts[m[4]] = counts.get(m[4], 0) + 1
        worst, where = 0.0, ""
        for m in members:
            try:
                ratio = float(m[2]) / float(m[3]) if float(m[3]) > 0 else float(m[2])
            except ValueError:
                continue
            if ratio >= worst:
                worst, where = (
                    ratio,
                    f"{m[2]} (tol {m[3]}) {m[1][len(group.split('::')[1]) :][:60]}",
                )
        tally = " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))
        print(f"  {group[:52]:<52} {tally:<16} worst {where[:60]}", flush=True)
    failed = [r for r in rows if r[4] in ("FAIL", "ERROR")]
    for module, name, err, _tol, status, message in failed[:25]:
        print(f"  {status} {module}::{name[:70]} err={err or '-'} {message[:150]}", flush=True)
    if len(failed) > 25:
        print(f"  … {len(failed) - 25} more failures in {table}", flush=True)


def timing(out: Path, replays: int) -> None:
    from concurrency.execute.gpu.bench import replay_time
    from concurrency.graph.builders import build_graph
    from concurrency.graph.config import get_config

    print(f"== timing smoke (CUDA-graph replays, median of {replays}, CUDA events)", flush=True)
    cfg = get_config("qwen3.5-27b")
    cases = [
        ("27B GDN decode B=1", build_graph(cfg, "gdn", "decode", 1), ("bf16", "f16")),
        (
            "27B 4-layer stack decode B=1",
            build_graph(cfg.replace(n_vocab=256), "stack", "decode", 1, layers=4),
            ("f16",),
        ),
    ]
    print(
        f"  {'case':<30} {'weights':>7} {'streams':>7} {'median µs':>10} "
        f"{'p10–p90 µs':>14} {'floor µs':>9} {'×floor':>7}",
        flush=True,
    )
    for label, graph, dtypes in cases:
        for wd in dtypes:
            medians = {}
            for streams in ("one", "multi"):
                try:
                    t = replay_time(
                        graph, streams=streams, weight_dtype=wd, replays=replays, label=label
                    )
                except Exception as exc:
                    print(
                        f"  {label:<30} {wd:>7} {streams:>7} FAILED: {_one_line(exc)}",
                        flush=True,
                    )
                    continue
                medians[streams] = t.median_us
                print(
                    f"  {label:<30} {wd:>7} {t.streams:>7} {t.median_us:>10.1f} "
                    f"{t.p10_us:>6.1f}–{t.p90_us:<7.1f} {t.floor_us:>9.1f} "
                    f"{t.median_us / t.floor_us:>7.2f}",
                    flush=True,
                )
            if len(medians) == 2:
                print(
                    f"  {'':<30} {wd:>7} speed-up of the streams: "
                    f"{medians['one'] / medians['multi']:.3f}×",
                    flush=True,
                )
    print(
        "  (llama.cpp, same widths, f16, 4 layers: 1107 µs/step; "
        "GDN layer floor ≈ 56 µs, goal ≤ 73 µs)",
        flush=True,
    )
    try:
        measured_timeline(out, graph=cases[0][1])
    except Exception as exc:
        print(
            f"  CUPTI timeline FAILED: {_one_line(exc)}",
            flush=True,
        )


def measured_timeline(out: Path, graph) -> None:  # type: ignore[no-untyped-def]
    from concurrency.execute.gpu.bench import random_device_inputs
    from concurrency.execute.gpu.launch import build_launch_plan
    from concurrency.execute.gpu.measure import measure_timeline
    from concurrency.execute.gpu.runner import DeviceRun
    from concurrency.graph.branches import detect_branches
    from concurrency.graph.schedule import stream_schedule
    from concurrency.memory.policies import plan_memory

    report = detect_branches(graph)
    schedule = stream_schedule(graph, report)
    plan = plan_memory(graph, schedule, report, "happens_before")
    run = DeviceRun(build_launch_plan(graph, schedule, plan, weight_dtype="bf16"))
    random_device_inputs(run)
    timeline = measure_timeline(run, "graph")
    run.free()
    path = timeline.save(out / "timeline-27b-gdn-decode-b1.json")
    spans = sorted(timeline.spans, key=lambda s: -s.duration_us)[:6]
    makespan = max(s.end_us for s in timeline.spans)
    print(
        f"  CUPTI timeline: {len(timeline.spans)} spans, makespan {makespan:.1f} µs → {path}",
        flush=True,
    )
    for s in spans:
        print(
            f"    {s.node:<28} stream {s.stream}  {s.duration_us:7.1f} µs  {s.kernel[:50]}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m concurrency.execute.gpu.selfcheck")
    ap.add_argument(
        "--out",
        default=os.environ.get("OUT", "gpu-selfcheck"),
        help="folder for the JUnit XML and the timeline",
    )
    ap.add_argument(
        "--tests", nargs="*", default=None, help="test files (default: tests/test_gpu_*.py)"
    )
    ap.add_argument("--no-tests", action="store_true")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--replays", type=int, default=200)
    ap.add_argument(
        "--budget-s",
        type=float,
        default=540.0,
        help="stop starting test targets after this many seconds minus the timing reserve",
    )
    ap.add_argument("--timing-reserve-s", type=float, default=90.0)
    ap.add_argument("-k", default=None, help="pytest -k expression")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reserve = 0.0 if args.no_timing else args.timing_reserve_s
    stop_at = time.perf_counter() + args.budget_s - reserve
    ok = True
    for step in ("versions", "compile", "tests", "timing"):
        try:
            if step == "versions":
                versions()
            elif step == "compile":
                ok &= compile_kernels()
            elif step == "tests" and not args.no_tests:
                tests = args.tests if args.tests is not None else default_tests()
                ok &= run_tests(out, tests, ["-k", args.k] if args.k else [], stop_at)
            elif step == "timing" and not args.no_timing:
                timing(out, args.replays)
        except Exception:
            ok = False
            print(f"== {step} FAILED", flush=True)
            traceback.print_exc(limit=4)
    print(f"== self-check {'passed' if ok else 'FAILED'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
