"""The GPU self-check: `python -m concurrency.execute.gpu.selfcheck [--out DIR]`.

One command for a GPU machine, robust so that one failure never hides the others:
1. versions (GPU, driver, CUDA, CuPy, nvmath-python, cupti-python, torch, transformers);
2. every kernel file compiled with NVRTC through CuPy (one line per file);
3. the GPU test suite (`pytest -m gpu tests/test_gpu_*.py`, never stopping at a failure), then a
   compact table: test, max relative error, tolerance, pass/fail;
4. a timing smoke: CUDA-graph replays, one stream against the schedule's streams timed in
   alternating rounds, of Qwen3.5-27B's GDN decode layer (bf16) at B = 1, 4, 16, 64 and of a
   4-layer 27B-width stack (f16, vocabulary 256) at B = 1, next to the HBM floor; then CUPTI
   timelines of the GDN layer and the stack at B = 1 with a per-kernel table (the 15 longest
   nodes, the bytes each moves and the bandwidth it reached).

Output. Progress lines print as each step runs; at the end a recap repeats what matters —
compile failures, the results per test function, every failure (at most 15 lines; all of them in
results.txt), the timing table and the kernel tables — so the last ~10 000 characters of the
output hold the answers. Files: every JUnit XML, pytest log, timeline JSON and table goes to a
work folder (default: a fresh temporary one), packed at the end into ONE archive
`<out>/selfcheck.tar.gz`; `<out>/results.txt` and `<out>/timing.txt` are copied beside it (a lent
machine returns only a few files). The exit status is non-zero when a compile or a test failed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

#: Failure lines the recap prints (results.txt has all of them).
RECAP_FAILURES = 15


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


@dataclass
class Recap:
    """What the self-check prints again at the very end, section by section."""

    compile: list[str] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    timing: list[str] = field(default_factory=list)
    kernels: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = ["== recap"]
        out += self.compile or ["  compile: (not run)"]
        out += self.results or ["  tests: (not run)"]
        out += self.timing
        out += self.kernels
        return out


def compile_kernels(recap: Recap) -> bool:
    from concurrency.execute.gpu import kernels

    print("== kernels (NVRTC through CuPy)", flush=True)
    ok = True
    count = 0
    t_all = time.perf_counter()
    for source in kernels.sources():
        t0 = time.perf_counter()
        try:
            module = kernels.module(source)
            for name in sorted(kernels.kernel_names(source)):
                module.get_function(name)
            count += len(kernels.kernel_names(source))
            _line(
                source,
                f"ok ({len(kernels.kernel_names(source))} kernels, "
                f"{time.perf_counter() - t0:.1f} s)",
            )
        except Exception as exc:
            ok = False
            message = f"FAILED: {str(exc).splitlines()[0][:300]}"
            _line(source, message)
            recap.compile.append(f"  compile {source}: {message}")
    if ok:
        recap.compile.append(
            f"  compile: {len(kernels.sources())} files, {count} kernels ok "
            f"({time.perf_counter() - t_all:.0f} s)"
        )
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


def run_tests(
    work: Path, tests: list[str], extra: list[str], recap: Recap, stop_at: float = float("inf")
) -> bool:
    """pytest -m gpu, one process per target (never stopping at a failure); JUnit XML and logs
    in `work`, the results table in work/results.txt and its summary in `recap`. Targets not
    started by `stop_at` (time.perf_counter()) are reported and skipped, so the timing smoke
    still runs inside the machine's time limit."""
    print("== GPU tests (one process per target)", flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    ok = True
    junits = []
    skipped = []
    t_all = time.perf_counter()
    for i, target in enumerate(test_targets(tests)):
        short = target.split("::")[-1].split("/")[-1]
        if time.perf_counter() > stop_at:
            ok = False
            skipped.append(short)
            print(f"  [--] not run (time budget): {target}", flush=True)
            continue
        junit = work / f"junit-{i:02d}.xml"
        log = work / f"pytest-{i:02d}.log"
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
                f.write(f"\nTIMEOUT after {_timeout(stop_at):.0f} s\n")
        lines = log.read_text(errors="replace").strip().splitlines()
        last = lines[-1] if lines else ""
        # exit 5: every test deselected (-k); not a failure
        ok &= code in (0, 5)
        print(f"  [{code:>2}] {time.perf_counter() - t0:5.1f} s  {short[:46]:<46} {last[:50]}")
        if code not in (0, 1, 5):  # a crash or a timeout: no JUnit failure line says why
            print("       " + "\n       ".join(lines[-8:]), flush=True)
            recap.results.append(f"  CRASH [{code}] {short}: {' | '.join(lines[-3:])[:200]}")
        if junit.is_file():
            junits.append(junit)
    print(f"  all targets: {time.perf_counter() - t_all:.0f} s", flush=True)
    if skipped:
        recap.results.append(f"  not run (time budget): {', '.join(skipped)[:300]}")
    if junits:
        recap.results[:0] = summary(junits, work / "results.txt")
    return ok


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def summary(junits: list[Path], table: Path) -> list[str]:
    """Write the full table (test, max relative error, tolerance, exact-activation error and
    its tolerance, result, message) to `table`; return the recap lines: one per test function
    (count by result, worst error against its tolerance) and every failure (at most
    RECAP_FAILURES; the table has all)."""
    rows = []
    cases = [c for junit in junits for c in ET.parse(junit).getroot().iter("testcase")]
    for case in cases:
        props = {p.get("name"): p.get("value") or "" for p in case.iter("property")}
        status, message = "pass", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                status = {"failure": "FAIL", "error": "ERROR", "skipped": "skip"}[tag]
                message = " ".join((node.get("message") or node.text or "").split())[:300]
        module = case.get("classname", "").split(".")[-1].removeprefix("test_gpu_")
        rows.append(
            (
                module,
                case.get("name", ""),
                props.get("max_rel_error", ""),
                props.get("tolerance", ""),
                props.get("exact_rel_error", ""),
                props.get("exact_tolerance", ""),
                status,
                message,
            )
        )
    with table.open("w") as f:
        f.write(f"{'test':<80} {'error':>11} {'tol':>7} {'exact':>11} {'exact tol':>9}\n")
        for module, name, err, tol, xerr, xtol, status, message in rows:
            f.write(
                f"{module}::{name:<70} {err:>11} {tol:>7} {xerr:>11} {xtol:>9}  {status}  "
                f"{message}\n"
            )
    out = [f"== results ({len(rows)} tests; the full table is results.txt)"]
    groups: dict[str, list] = {}
    for row in rows:
        groups.setdefault(f"{row[0]}::{row[1].split('[')[0]}", []).append(row)
    for group, members in groups.items():
        counts: dict[str, int] = {}
        for m in members:
            counts[m[6]] = counts.get(m[6], 0) + 1
        worst, where = 0.0, ""
        for m in members:
            err, tol = _float(m[2]), _float(m[3])
            if err is None or tol is None:
                continue
            ratio = err / tol if tol > 0 else err
            if ratio >= worst:
                case = m[1][len(group.split("::")[1]) :]
                worst, where = ratio, f"{m[2]} (tol {m[3]}) {case[:48]}"
        tally = " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))
        out.append(f"  {group[:52]:<52} {tally:<16} worst {where[:70]}")
    failed = [r for r in rows if r[6] in ("FAIL", "ERROR")]
    for module, name, err, _tol, xerr, _xtol, status, message in failed[:RECAP_FAILURES]:
        exact = f" exact={xerr}" if xerr and xerr != err else ""
        out.append(f"  {status} {module}::{name[:64]} err={err or '-'}{exact} {message[:110]}")
    if len(failed) > RECAP_FAILURES:
        out.append(f"  … {len(failed) - RECAP_FAILURES} more failures in results.txt")
    return out


#: The timing cases, each run in its own process (a kernel fault or hang at a 27B shape the
#: tests do not run loses that case only): key → (label, layer, batch, weight type).
TIMING_CASES = {
    "gdn-1": ("27B GDN decode B=1", "gdn", 1, "bf16"),
    "gdn-4": ("27B GDN decode B=4", "gdn", 4, "bf16"),
    "gdn-16": ("27B GDN decode B=16", "gdn", 16, "bf16"),
    "gdn-64": ("27B GDN decode B=64", "gdn", 64, "bf16"),
    "stack-1": ("27B 4-layer stack B=1", "stack", 1, "f16"),
}
#: The cases whose CUPTI timelines and kernel tables are recorded (again one process each).
KERNEL_CASES = ("gdn-1", "stack-1")
CHILD_TIMEOUT_S = 150.0


def _case_graph(key: str):  # type: ignore[no-untyped-def]
    from concurrency.graph.builders import build_graph
    from concurrency.graph.config import get_config

    label, layer, batch, wd = TIMING_CASES[key]
    cfg = get_config("qwen3.5-27b")
    if layer == "stack":
        return label, build_graph(cfg.replace(n_vocab=256), "stack", "decode", batch, layers=4), wd
    return label, build_graph(cfg, layer, "decode", batch), wd


def timing_line(key: str, rounds: int, replays: int) -> str:
    """One row of the timing table: case `key` timed one stream vs streams (alternating)."""
    from concurrency.execute.gpu.bench import compare_streams

    label, graph, wd = _case_graph(key)
    one, multi = compare_streams(
        graph, weight_dtype=wd, rounds=rounds, replays=replays, label=label
    )
    best = min(one.median_us, multi.median_us)
    return (
        f"  {label:<24} {wd:>4} {one.median_us:>8.1f} {one.p10_us:>6.1f}–{one.p90_us:<6.1f} "
        f"{multi.median_us:>8.1f} {multi.p10_us:>6.1f}–{multi.p90_us:<6.1f} {multi.streams:>2} "
        f"{one.median_us / multi.median_us:>6.3f} {one.floor_us:>7.1f} {best / one.floor_us:>7.2f}"
    )


def _child(kind: str, key: str, work: Path, rounds: int, replays: int, stop_at: float) -> list[str]:
    """Run one timing or kernel-table case in a child process; its lines, or why there are none."""
    out = work / f"{kind}-{key}.txt"
    log = work / f"{kind}-{key}.log"
    cmd = [
        sys.executable,
        "-m",
        "concurrency.execute.gpu.selfcheck",
        "--child",
        f"{kind}:{key}",
        "--work",
        str(work),
        "--rounds",
        str(rounds),
        "--replays",
        str(replays),
    ]
    timeout = max(30.0, min(CHILD_TIMEOUT_S, stop_at - time.perf_counter()))
    label = TIMING_CASES[key][0]
    t0 = time.perf_counter()
    with log.open("w") as f:
        try:
            code = subprocess.run(
                cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
    lines = out.read_text().splitlines() if out.is_file() else []
    print(f"  {kind} {label}: exit {code}, {time.perf_counter() - t0:.0f} s", flush=True)
    if code != 0 or not lines:
        logged = log.read_text(errors="replace").strip().splitlines()
        tail = " | ".join(logged[-1:] + logged[-4:-1])  # the error line first, then its context
        why = "timeout" if code == -1 else f"exit {code}"
        lines.append(f"  {label:<24} {kind} FAILED ({why}): {tail[:220]}")
    return lines


def run_child(spec: str, work: Path, rounds: int, replays: int) -> int:
    """The child side of `_child`: write the case's lines to work/<kind>-<key>.txt."""
    kind, key = spec.split(":", 1)
    if kind == "timing":
        lines = [timing_line(key, rounds, replays)]
    else:
        label, graph, wd = _case_graph(key)
        lines = kernel_tables(work, label, graph, wd)
    (work / f"{kind}-{key}.txt").write_text("\n".join(lines) + "\n")
    return 0


def timing(work: Path, recap: Recap, rounds: int, replays: int, stop_at: float) -> None:
    """Replay timings (alternating rounds) and the CUPTI kernel tables, each case in its own
    process, into `recap` and work/timing.txt."""
    lines = [
        f"== timing: CUDA-graph replays (CUDA events), one stream vs the schedule's streams, "
        f"{rounds} alternating rounds × {replays}; medians, µs",
        f"  {'case':<24} {'w':>4} {'one':>8} {'p10–p90':>13} {'multi':>8} {'p10–p90':>13} "
        f"{'st':>2} {'one/mu':>6} {'floor':>7} {'best×fl':>7}",
    ]
    print(lines[0], flush=True)
    for key in TIMING_CASES:
        lines += _child("timing", key, work, rounds, replays, stop_at)
        print(lines[-1], flush=True)
    lines.append(
        "  goals: GDN B=1 ≤ 73 µs (1.3× its floor); stack below llama.cpp's 1107 µs/step (same "
        "widths, f16, 4 layers; gdn-reference §6.3)"
    )
    recap.timing = lines
    for key in KERNEL_CASES:
        recap.kernels += _child("kernels", key, work, rounds, replays, stop_at)
    with contextlib.suppress(OSError):
        (work / "timing.txt").write_text("\n".join(lines + recap.kernels) + "\n")


def kernel_tables(work: Path, label: str, graph, weight_dtype: str, top: int = 15) -> list[str]:  # type: ignore[no-untyped-def]
    """CUPTI timelines of one replay on one stream and on the schedule's streams (saved as
    JSON in `work`); the one-stream run's `top` longest nodes with bytes and GB/s."""
    from concurrency.execute.gpu.bench import kernel_table, random_device_inputs, timed_plan
    from concurrency.execute.gpu.measure import measure_timeline
    from concurrency.execute.gpu.runner import DeviceRun

    out: list[str] = []
    stem = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    for streams in ("one", "multi"):
        lp = timed_plan(graph, streams, "happens_before", weight_dtype)
        run = DeviceRun(lp)
        try:
            random_device_inputs(run)
            timeline = measure_timeline(run, "graph")
        finally:
            run.free()
        timeline.save(work / f"timeline-{stem}-{streams}.json")
        rows = kernel_table(lp, timeline)
        busy = sum(r.duration_us for r in rows)
        makespan = max(s.end_us for s in timeline.spans) - min(s.start_us for s in timeline.spans)
        moved = sum(r.bytes_moved for r in rows)
        out.append(
            f"== CUPTI {label} {weight_dtype}, {streams} stream{'s' if streams == 'multi' else ''}"
            f": {len(rows)} nodes, Σ kernels {busy:.1f} µs, makespan {makespan:.1f} µs, "
            f"{moved / 1e6:.1f} MB ({moved / makespan / 1e3:.0f} GB/s over the makespan)"
        )
        if streams != "one":
            continue
        out.append(f"  {'node':<26} {'kernel':<30} {'µs':>7} {'MB':>8} {'GB/s':>6}")
        for r in rows[:top]:
            out.append(
                f"  {r.node[:26]:<26} {r.kernel.split('(')[0][:30]:<30} {r.duration_us:>7.1f} "
                f"{r.bytes_moved / 1e6:>8.2f} {r.gb_per_s:>6.0f}"
            )
    return out


def _archive(work: Path, out: Path) -> str:
    """Pack every file of `work` into out/selfcheck.tar.gz; copy results.txt and timing.txt."""
    archive = out / "selfcheck.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(work.rglob("*")):
            if path.is_file() and path.resolve() != archive.resolve():
                tar.add(path, arcname=f"selfcheck/{path.relative_to(work)}")
    for name in ("results.txt", "timing.txt"):
        if (work / name).is_file() and work.resolve() != out.resolve():
            shutil.copyfile(work / name, out / name)
    return f"{archive} ({archive.stat().st_size / 1e6:.1f} MB)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m concurrency.execute.gpu.selfcheck")
    ap.add_argument(
        "--out",
        default=os.environ.get("OUT", "gpu-selfcheck"),
        help="folder for selfcheck.tar.gz, results.txt and timing.txt",
    )
    ap.add_argument(
        "--work", default=None, help="folder for every file before packing (default: temporary)"
    )
    ap.add_argument(
        "--tests", nargs="*", default=None, help="test files (default: tests/test_gpu_*.py)"
    )
    ap.add_argument("--no-tests", action="store_true")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--rounds", type=int, default=6, help="alternating timing rounds")
    ap.add_argument("--replays", type=int, default=50, help="replays per configuration and round")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=480.0,
        help="stop starting test targets after this many seconds minus the timing reserve",
    )
    ap.add_argument("--timing-reserve-s", type=float, default=150.0)
    ap.add_argument("-k", default=None, help="pytest -k expression")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:  # one timing or kernel-table case (timing() starts these)
        return run_child(args.child, Path(args.work), args.rounds, args.replays)
    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lace-selfcheck-"))
    work.mkdir(parents=True, exist_ok=True)
    reserve = 0.0 if args.no_timing else args.timing_reserve_s
    stop_at = t_start + args.budget_s - reserve
    recap = Recap()
    ok = True
    for step in ("versions", "compile", "tests", "timing"):
        try:
            if step == "versions":
                versions()
            elif step == "compile":
                ok &= compile_kernels(recap)
            elif step == "tests" and not args.no_tests:
                tests = args.tests if args.tests is not None else default_tests()
                ok &= run_tests(work, tests, ["-k", args.k] if args.k else [], recap, stop_at)
            elif step == "timing" and not args.no_timing:
                timing(work, recap, args.rounds, args.replays, t_start + args.budget_s + 60.0)
        except Exception as exc:
            ok = False
            print(f"== {step} FAILED", flush=True)
            traceback.print_exc(limit=4)
            recap.results.append(f"  step {step} FAILED: {_one_line(exc)}")
    try:
        packed = _archive(work, out)
    except Exception as exc:
        packed = f"FAILED: {_one_line(exc)}"
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(recap.lines()), flush=True)
    print(
        f"== self-check {'passed' if ok else 'FAILED'} in {time.perf_counter() - t_start:.0f} s; "
        f"files: {packed}",
        flush=True,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
