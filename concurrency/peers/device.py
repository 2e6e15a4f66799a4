"""Every peer in one run on one GPU: `python -m concurrency.peers.device --out DIR`.

The device machine gives one call of at most ten minutes, so the run overlaps what it can:
the llama.cpp build (cmake + ninja, CPU) and the random-weight GGUF (a subprocess) start in
the background, the Python peers (LACE, fla, PyTorch + fla; GPU) run meanwhile, then the
llama.cpp programs run on the idle GPU. Every phase is guarded: a peer that cannot be
imported, built or run becomes rows with that status and the reason, and a phase that would
overrun the time budget is skipped with rows saying so. Results: DIR/peers.json (rows and
metadata), DIR/peers-table.txt, DIR/llama-raw.txt (the llama.cpp programs' own output),
DIR/llama-build.log.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from concurrency.errors import MissingToolError
from concurrency.peers.cases import (
    DECODE_BATCHES,
    PREFILL_CASES,
    TORCH_STREAMS,
    qwen35_27b,
)
from concurrency.peers.results import PeerRow, PeersMeta, failed_row, save_results
from concurrency.peers.table import format_table
from concurrency.peers.trim import GGML_VERSION, LLAMA_CPP_COMMIT, SOURCE

PATCH_MARK = "LACE peers: Qwen3.5-27B GDN dims"
#: No llama.cpp round starts later than this before the budget ends (a round takes ~25 s).
ROUND_RESERVE_S = 40.0


class Clock:
    """Seconds since the run started, and a log line with them."""

    def __init__(self, budget_s: float) -> None:
        self.t0 = time.time()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.time() - self.t0

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def log(self, text: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {text}", flush=True)


# ---------------------------------------------------------------------------- planned rows
def planned_python_rows(peer_phase: str) -> list[tuple[str, str, str, int, int]]:
    """(peer, case, variant, batch, tokens) of a Python phase, for rows that did not run."""
    decode = [(b, 1) for b in DECODE_BATCHES]
    if peer_phase == "lace core":
        return [("lace", "gdn core decode", "recurrent kernel", b, t) for b, t in decode] + [
            ("lace", "gdn core prefill", "chunked kernel", b, t) for b, t in PREFILL_CASES
        ]
    if peer_phase == "fla core":
        return [("fla", "gdn core decode", "fused_recurrent", b, t) for b, t in decode] + [
            ("fla", "gdn core prefill", "chunk", b, t) for b, t in PREFILL_CASES
        ]
    if peer_phase == "torch layer":
        return [
            ("torch+fla", "gdn layer decode", f"{n} stream" + ("s" if n > 1 else ""), b, 1)
            for b in DECODE_BATCHES
            for n in TORCH_STREAMS
        ]
    case = "gdn layer decode" if peer_phase == "lace layer" else "4-layer model decode step"
    return [
        ("lace", case, variant, b, 1)
        for b in DECODE_BATCHES
        for variant in ("1 stream", "schedule streams")
    ]


def status_rows(peer_phase: str, status: str, reason: str) -> list[PeerRow]:
    return [
        failed_row(peer, case, variant, b, t, status, reason)
        for peer, case, variant, b, t in planned_python_rows(peer_phase)
    ]


# ---------------------------------------------------------------------------- metadata
def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def collect_meta(command: str, llama_src: Path | None) -> PeersMeta:
    device = driver = cuda = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        smi = (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            .stdout.strip()
            .splitlines()
        )
        if smi:
            device, _, driver = (s.strip() for s in smi[0].partition(","))
    with contextlib.suppress(Exception):
        import torch

        props = torch.cuda.get_device_properties(0)
        cuda = f"torch CUDA {torch.version.cuda}, sm_{props.major}{props.minor}"
        cuda += f", {props.multi_processor_count} SMs"
    versions = {
        name: v
        for name in (
            "torch",
            "triton",
            "fla-core",
            "flash-linear-attention",
            "transformers",
            "nvmath-python",
            "numpy",
            "cuda-core",
            "cuda-bindings",
        )
        if (v := _version(name))
    }
    versions["python"] = sys.version.split()[0]
    llama: dict[str, str] = {"source": SOURCE, "commit": LLAMA_CPP_COMMIT, "ggml": GGML_VERSION}
    if llama_src is not None:
        trim = llama_src / "LACE-TRIM.json"
        if trim.is_file():
            with contextlib.suppress(ValueError):
                info = json.loads(trim.read_text())
                llama["cmake_flags"] = " ".join(info.get("cmake_flags", []))
    return PeersMeta(
        date=dt.date.today().isoformat(),
        command=command,
        device=device,
        driver=driver,
        cuda=cuda,
        cupy=_version("cupy-cuda13x") or _version("cupy-cuda12x"),
        versions=versions,
        llama_cpp=llama,
    )


# ---------------------------------------------------------------------------- phases
def run_python_phase(
    name: str, fn: Callable[[], list[PeerRow]], clock: Clock, stop_at_s: float
) -> list[PeerRow]:
    """One Python peer phase; import problems, crashes and the time budget become rows."""
    if clock.elapsed() > stop_at_s:
        clock.log(f"== {name}: not run (time budget)")
        return status_rows(name, "not run", f"time budget: {stop_at_s:.0f} s had passed")
    clock.log(f"== {name}")
    t0 = time.time()
    try:
        rows = fn()
    except (ImportError, MissingToolError) as exc:
        clock.log(f"  {name}: not imported: {exc}")
        return status_rows(name, "not imported", f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        clock.log(f"  {name}: FAILED: {exc!r}")
        traceback.print_exc(limit=3)
        return status_rows(name, "failed", f"{type(exc).__name__}: {exc}")
    clock.log(f"  {name}: {len(rows)} rows in {time.time() - t0:.0f} s")
    return rows


def python_phases(replays: int, clock: Clock) -> list[tuple[str, Callable[[], list[PeerRow]]]]:
    dims = qwen35_27b()

    def lace_core() -> list[PeerRow]:
        from concurrency.peers.lace_peers import lace_core_rows

        return lace_core_rows(dims, replays, clock.log)

    def fla_core() -> list[PeerRow]:
        from concurrency.peers.fla_peers import fla_core_rows

        return fla_core_rows(dims, replays, clock.log)

    def lace_layer() -> list[PeerRow]:
        from concurrency.peers.lace_peers import lace_layer_rows

        return lace_layer_rows(replays, clock.log)

    def torch_layer() -> list[PeerRow]:
        from concurrency.peers.fla_peers import torch_layer_rows

        return torch_layer_rows(dims, replays, clock.log)

    def lace_model() -> list[PeerRow]:
        from concurrency.peers.lace_peers import lace_model_rows

        return lace_model_rows(max(50, replays // 2), clock.log)

    return [
        ("lace core", lace_core),
        ("fla core", fla_core),
        ("lace layer", lace_layer),
        ("torch layer", torch_layer),
        ("lace model", lace_model),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m concurrency.peers.device")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "peers-out")))
    ap.add_argument("--llama-src", type=Path, default=Path(".llama-src"))
    ap.add_argument("--build-dir", type=Path, default=Path("/tmp/lace-llama-build"))
    ap.add_argument("--model", type=Path, default=Path("/tmp/lace-peers/qwen35-27b-4l-f16.gguf"))
    ap.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 4) - 2))
    ap.add_argument("--replays", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3, help="llama.cpp GRAPH_OPT off/on rounds")
    ap.add_argument("--op-rounds", type=int, default=3, help="test-backend-ops invocations")
    ap.add_argument("--budget-s", type=float, default=530.0, help="stop starting work after this")
    ap.add_argument("--no-python", action="store_true", help="skip the Python peers")
    ap.add_argument("--no-llama", action="store_true", help="skip building and running llama.cpp")
    args = ap.parse_args(argv)

    from concurrency.peers import llama_peers as lp

    clock = Clock(args.budget_s)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m concurrency.peers.device " + shlex.join(argv or sys.argv[1:])
    llama_src = args.llama_src if (args.llama_src / "CMakeLists.txt").is_file() else None
    meta = collect_meta(command, llama_src)
    clock.log(f"peers on {meta.device or '?'} (driver {meta.driver}); {meta.versions}")
    phases_s: dict[str, float] = {}
    notes: list[str] = []
    rows: list[PeerRow] = []

    # background: the llama.cpp build and the GGUF
    build = model_proc = None
    build_log = out / "llama-build.log"
    build_reason = ""
    if args.no_llama:
        build_reason = "skipped (--no-llama)"
    elif llama_src is None:
        build_reason = f"no llama.cpp source at {args.llama_src} (carry the trimmed tree)"
    else:
        tbo = (llama_src / "tests/test-backend-ops.cpp").read_text(errors="replace")
        if PATCH_MARK not in tbo:  # the end-to-end rows do not need it; ggml-cuda's say why
            clock.log("== the test-backend-ops patch is not applied: no 27B GDN perf cases")
        build_started = time.time()
        build = lp.start_build(llama_src, args.build_dir, args.jobs, build_log)
        clock.log(f"== llama.cpp build started in the background (-j {args.jobs})")
        args.model.parent.mkdir(parents=True, exist_ok=True)
        with open(out / "llama-model.log", "w") as model_log:  # the child keeps its own
            model_proc = subprocess.Popen(
                [sys.executable, "-m", "concurrency.peers.model", str(args.model)],
                stdout=model_log,
                stderr=subprocess.STDOUT,
            )
    if build_reason:
        clock.log(f"== llama.cpp: {build_reason}")
        rows += lp.not_built_rows(build_reason)

    # the Python peers on the GPU, while the build runs
    python_stop = args.budget_s - (150.0 if build is not None else 20.0)
    for name, fn in python_phases(args.replays, clock):
        if args.no_python:
            rows += status_rows(name, "not run", "skipped (--no-python)")
            continue
        t0 = time.time()
        rows += run_python_phase(name, fn, clock, python_stop)
        phases_s[name] = round(time.time() - t0, 1)
        with contextlib.suppress(Exception):
            import torch

            torch.cuda.empty_cache()
        save_results(out / "peers.json", meta, rows)  # partial results survive a timeout

    # llama.cpp once built
    if build is not None:
        t0 = time.time()
        clock.log("== waiting for the llama.cpp build")
        result = lp.finish_build(build, build_started, clock.left() - 60.0, build_log)
        phases_s["llama.cpp build (overlapped)"] = round(result.seconds, 1)
        clock.log(
            f"  build {'ok' if result.ok else 'FAILED'} after {result.seconds:.0f} s "
            f"{result.reason}"
        )
        model_ok, model_reason = False, "the GGUF writer did not finish"
        if model_proc is not None:
            try:
                model_ok = model_proc.wait(timeout=max(1.0, clock.left() - 60.0)) == 0
                model_reason = "" if model_ok else "the GGUF writer failed (llama-model.log)"
            except subprocess.TimeoutExpired:
                model_proc.kill()
        clock.log((out / "llama-model.log").read_text(errors="replace").strip()[-300:])
        raw: list[str] = []
        if not result.ok:
            rows += lp.not_built_rows(result.reason)
        else:
            bin_dir = args.build_dir / "bin"
            t1 = time.time()
            rows += lp.backend_ops_rows(bin_dir, args.op_rounds, 120.0, raw, clock.log)
            phases_s["test-backend-ops"] = round(time.time() - t1, 1)
            t1 = time.time()
            if model_ok:
                from concurrency.peers.cases import peer_model_config
                from concurrency.peers.model import weight_bytes

                model_rows, model_notes = lp.model_rows(
                    bin_dir,
                    args.model,
                    weight_bytes(peer_model_config()),
                    args.rounds,
                    120.0,
                    raw,
                    clock.log,
                    deadline=clock.t0 + args.budget_s - ROUND_RESERVE_S,
                )
                rows += model_rows
                notes += model_notes
            else:
                rows += lp.llama_failed_rows("failed", model_reason)
            phases_s["llama.cpp end to end"] = round(time.time() - t1, 1)
        (out / "llama-raw.txt").write_text("\n".join(raw), encoding="utf-8")
        phases_s["llama.cpp total after build start"] = round(time.time() - t0, 1)

    phases_s["total"] = round(clock.elapsed(), 1)
    meta = dataclasses.replace(meta, phases_s=phases_s, notes=tuple(notes))
    save_results(out / "peers.json", meta, rows)
    table = format_table(meta, rows)
    (out / "peers-table.txt").write_text(table + "\n", encoding="utf-8")
    print(table, flush=True)
    clock.log(f"phases (s): {phases_s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
