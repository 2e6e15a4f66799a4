"""ggml-cuda and upstream llama.cpp as peers: building the trimmed vendored llama.cpp, then
`test-backend-ops perf` for the GATED_DELTA_NET op and `llama-batched-bench` / `llama-bench`
end to end (decode steps, and batched-bench's prompt phase as the prefill case), as rows of the
peers table.

ggml's op time is test-backend-ops' own figure (the op repeated inside one graph, mean µs per
run); it reports a mean, so the command runs `op_rounds` times and the row's spread is over
those invocations. End to end, stream concurrency (`GGML_CUDA_GRAPH_OPT=1`) is measured off and
on in alternating order over `rounds` rounds, since a process's first run is slower and a fixed
order once showed a false 3–5 % gain (device-recipes.md). Each batched-bench process's first
prompts pay its warm-up; `warmup_flags` finds them from the times and their rows say so.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from concurrency.errors import LaceError
from concurrency.peers.cases import (
    DECODE_BATCHES,
    LLAMA_BATCHES,
    LLAMA_DECODE,
    LLAMA_PROMPT,
    LLAMA_UBATCH,
    PREFILL_CASES,
    core_floor_us,
    model_floor_us,
    peer_model_config,
    prompt_ubatches,
    qwen35_27b,
)
from concurrency.peers.parse import (
    BatchedBenchRow,
    parse_backend_ops_perf,
    parse_batched_bench,
    parse_llama_bench,
)
from concurrency.peers.results import PeerRow, failed_row, measured_row
from concurrency.peers.table import WARMUP_MARK
from concurrency.peers.trim import CMAKE_FLAGS, TARGETS

#: test-backend-ops parameter filter for the perf cases the LACE patch adds (27B GDN dims).
OP_FILTER = "head_count=16,head_size=128,.*v_repeat=3"
MODEL_CASE = "4-layer model decode step"
#: batched-bench's prompt phase (T_PP), the end-to-end prefill case.
PREFILL_CASE = "4-layer model prefill"
#: A prompt phase slower per ubatch than this many times a later, at least as full ubatch of
#: the same process is warm-up (`warmup_flags`).
WARMUP_FACTOR = 2.0
GRAPH_OPT = "GGML_CUDA_GRAPH_OPT"
#: How variants name the GRAPH_OPT setting (short enough for the table).
OPT_LABEL = "GRAPH_OPT"


@dataclass(frozen=True)
class BuildResult:
    ok: bool
    seconds: float
    reason: str = ""


def build_script(src: Path, build_dir: Path, jobs: int) -> str:
    """The shell command that configures and builds the three targets."""
    configure = ["cmake", "-S", str(src), "-B", str(build_dir), *CMAKE_FLAGS]
    build = ["cmake", "--build", str(build_dir), "-j", str(jobs), "--target", *TARGETS]
    return f"{shlex.join(configure)} && {shlex.join(build)}"


def start_build(src: Path, build_dir: Path, jobs: int, log_path: Path) -> subprocess.Popen:
    """Configure and build in the background, in a process group of its own (output to
    `log_path`)."""
    with open(log_path, "w") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            ["bash", "-c", build_script(src, build_dir, jobs)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def finish_build(
    proc: subprocess.Popen, started: float, timeout_s: float, log_path: Path
) -> BuildResult:
    """Wait for the background build; on failure or timeout, the reason (log's last lines).
    A build past `timeout_s` is stopped with its whole process group (cmake, ninja, nvcc)."""
    try:
        code = proc.wait(timeout=max(1.0, timeout_s))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reason = f"build still running after {timeout_s:.0f} s"
        return BuildResult(False, time.time() - started, reason)
    seconds = time.time() - started
    if code != 0:
        return BuildResult(False, seconds, f"build exit {code}: {build_problem(log_path)}")
    return BuildResult(True, seconds)


def build_problem(log_path: Path) -> str:
    """The first error lines of a build log (CMake's or the compiler's), else its last line."""
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    hits = [i for i, ln in enumerate(lines) if "error" in ln.lower() or ln.startswith("FAILED:")]
    if not hits:
        return lines[-1][:300] if lines else "no output"
    first = hits[0]
    return " | ".join(lines[first : first + 3])[:400]


def op_cases() -> list[tuple[int, int]]:
    """(sequences, tokens) of the GATED_DELTA_NET perf cases the LACE patch adds."""
    return [(b, 1) for b in DECODE_BATCHES] + list(PREFILL_CASES)


def _op_case(tokens: int) -> str:
    return "gdn core decode" if tokens == 1 else "gdn core prefill"


def model_variants() -> list[tuple[str, int]]:
    """(variant, batch) of every llama.cpp end-to-end decode row."""
    out = [(f"batched-bench {OPT_LABEL}={opt}", b) for b in LLAMA_BATCHES for opt in (0, 1)]
    out += [(f"llama-bench tg{LLAMA_DECODE} {OPT_LABEL}={opt}", 1) for opt in (0, 1)]
    return out


def prefill_variants() -> list[tuple[str, int]]:
    """(variant, batch) of every llama.cpp prefill row (tokens: LLAMA_PROMPT per sequence)."""
    return [(f"batched-bench {OPT_LABEL}={opt}", b) for b in LLAMA_BATCHES for opt in (0, 1)]


def llama_failed_rows(status: str, reason: str) -> list[PeerRow]:
    """Every llama.cpp end-to-end row (decode and prefill) with `status` and `reason`."""
    rows = [
        failed_row("llama.cpp", MODEL_CASE, variant, b, 1, status, reason)
        for variant, b in model_variants()
    ]
    rows += [
        failed_row("llama.cpp", PREFILL_CASE, variant, b, LLAMA_PROMPT, status, reason)
        for variant, b in prefill_variants()
    ]
    return rows


def not_built_rows(reason: str) -> list[PeerRow]:
    """Every ggml-cuda and llama.cpp row, marked not built (so none is silently missing)."""
    rows = [
        failed_row("ggml-cuda", _op_case(t), "GATED_DELTA_NET", b, t, "not built", reason)
        for b, t in op_cases()
    ]
    return rows + llama_failed_rows("not built", reason)


def _run(cmd: Sequence[str], env: dict[str, str], timeout_s: float, raw: list[str]) -> str:
    """Run a program, keep its output (stdout and stderr) in `raw`, return it; a non-zero exit
    or a timeout is an error naming the program."""
    head = f"$ {' '.join(f'{k}={v}' for k, v in env.items() if k == GRAPH_OPT)} {shlex.join(cmd)}"
    try:
        done = subprocess.run(
            list(cmd), env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as exc:
        raw.append(f"{head}\n(timeout after {timeout_s:.0f} s)\n")
        raise LaceError(f"{Path(cmd[0]).name} ran past {timeout_s:.0f} s") from exc
    raw.append(f"{head}\n{done.stdout}\n{done.stderr}\n(exit {done.returncode})\n")
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise LaceError(f"{Path(cmd[0]).name} exit {done.returncode}: {' | '.join(tail)[-300:]}")
    return done.stdout + "\n" + done.stderr


def backend_ops_rows(
    bin_dir: Path, op_rounds: int, timeout_s: float, raw: list[str], log: Callable[[str], None]
) -> list[PeerRow]:
    """ggml-cuda's GATED_DELTA_NET at the 27B dims (the patched perf cases)."""
    cmd = [
        str(bin_dir / "test-backend-ops"),
        "perf",
        "-o",
        "GATED_DELTA_NET",
        "-b",
        "CUDA0",
        "-p",
        OP_FILTER,
    ]
    samples: dict[tuple[int, int], list[float]] = defaultdict(list)
    runs: dict[tuple[int, int], int] = {}
    unsupported: set[tuple[int, int]] = set()
    try:
        for _ in range(op_rounds):
            for r in parse_backend_ops_perf(_run(cmd, {}, timeout_s, raw), "GATED_DELTA_NET"):
                key = (r.int_param("n_seqs"), r.int_param("n_seq_tokens"))
                if r.int_param("head_count") != 16 or r.int_param("v_repeat") != 3:
                    continue
                if not r.supported:
                    unsupported.add(key)
                    continue
                samples[key].append(r.us_per_run)
                runs[key] = r.runs
    except LaceError as exc:
        problem = str(exc)
        log(f"  test-backend-ops: {problem}")
    else:
        problem = "test-backend-ops printed no such case: is the LACE patch applied?"
    dims = qwen35_27b()
    rows = []
    for b, t in op_cases():
        case = _op_case(t)
        if not samples.get((b, t)):
            reason = "CUDA0 does not support this case" if (b, t) in unsupported else problem
            rows.append(failed_row("ggml-cuda", case, "GATED_DELTA_NET", b, t, "failed", reason))
            continue
        form = "recurrent" if t == 1 else "recurrent (ggml has no chunked form)"
        rows.append(
            measured_row(
                "ggml-cuda",
                case,
                "GATED_DELTA_NET",
                b,
                t,
                samples[(b, t)],
                floor_us=core_floor_us(dims, b) if t == 1 else None,
                notes=f"test-backend-ops perf: mean of ~{runs[(b, t)]} runs of the op repeated "
                f"in one graph on the same tensors (small cases stay in L2), per invocation; "
                f"f32; {form}",
            )
        )
        log(f"  ggml-cuda GATED_DELTA_NET B={b} T={t}: {rows[-1].median_us:.1f} µs")
    return rows


def batched_bench_cmd(bin_dir: Path, model: Path) -> list[str]:
    npl = ",".join(str(b) for b in LLAMA_BATCHES)
    n_ctx = max(LLAMA_BATCHES) * (LLAMA_PROMPT + LLAMA_DECODE)
    return [
        str(bin_dir / "llama-batched-bench"),
        "-m",
        str(model),
        "-ngl",
        "99",
        "-fa",
        "off",
        "-c",
        str(n_ctx),
        "-b",
        "2048",
        "-ub",
        str(LLAMA_UBATCH),
        "-npp",
        str(LLAMA_PROMPT),
        "-ntg",
        str(LLAMA_DECODE),
        "-npl",
        npl,
        "--output-format",
        "jsonl",
    ]


def llama_bench_cmd(bin_dir: Path, model: Path, repetitions: int) -> list[str]:
    return [
        str(bin_dir / "llama-bench"),
        "-m",
        str(model),
        "-ngl",
        "99",
        "-fa",
        "off",
        "-p",
        "0",
        "-n",
        str(LLAMA_DECODE),
        "-r",
        str(repetitions),
        "-o",
        "jsonl",
    ]


@dataclass(frozen=True)
class PromptSample:
    """One batched-bench process's prompt phase at one batch: `batch` sequences of
    `prompt_tokens` tokens each, the host wall time of the whole phase (T_PP), and whether it
    includes the process's warm-up (`warmup_flags`)."""

    graph_opt: int
    batch: int
    prompt_tokens: int
    t_pp_us: float
    warmup: bool


def warmup_flags(rows: Sequence[BatchedBenchRow], ubatch: int = LLAMA_UBATCH) -> tuple[bool, ...]:
    """Which of one process's rows (in the order it ran them) include its warm-up.

    Why a rule is needed: batched-bench warms up with one short decode only, so its first
    prompts also pay for first use (CUDA modules loaded lazily, cuBLAS heuristics, buffers
    allocated): on the H200, 124 ms at B = 1 against 9.5 ms for four times the tokens at B = 4.

    The rule, from the times alone: the prompt phase runs `prompt_ubatches` ubatches, and one
    ubatch does not get faster by holding more tokens. So a row's time per ubatch may exceed a
    later row's only where that later row's ubatches hold fewer tokens; a row slower per
    ubatch than WARMUP_FACTOR × some later row whose ubatches hold at least as many tokens is
    paying for something other than its tokens: warm-up. The last row is never flagged."""
    per_ubatch = []
    for r in rows:
        split = prompt_ubatches(r.batch, r.pp, ubatch)
        per_ubatch.append((r.t_pp_s / len(split), max(split) * r.pp))
    return tuple(
        any(
            t_i > WARMUP_FACTOR * t_j and tokens_j >= tokens_i
            for t_j, tokens_j in per_ubatch[i + 1 :]
        )
        for i, (t_i, tokens_i) in enumerate(per_ubatch)
    )


def prompt_samples(rows: Sequence[BatchedBenchRow], graph_opt: int) -> tuple[PromptSample, ...]:
    """One process's prompt phases (its parsed batched-bench rows), warm-up flagged."""
    flags = warmup_flags(rows)
    return tuple(
        PromptSample(graph_opt, r.batch, r.pp, r.t_pp_s * 1e6, flag)
        for r, flag in zip(rows, flags, strict=True)
    )


def _prefill_notes(samples: Sequence[PromptSample]) -> str:
    base = (
        f"host wall time of the whole prompt phase (T_PP: B sequences × {LLAMA_PROMPT} tokens "
        f"in ubatches of ≤ {LLAMA_UBATCH}), f16 GGUF, -fa off; one sample per process"
    )
    warm = sum(s.warmup for s in samples)
    if not warm:
        return base + "; no warm-up in these samples"
    return (
        f"{base}; {WARMUP_MARK}: includes the process's warm-up in {warm} of {len(samples)} "
        f"samples (slower per ubatch than {WARMUP_FACTOR:g}× a later, at least as full ubatch)"
    )


def prefill_rows(samples: Sequence[PromptSample], reason: str = "no result") -> list[PeerRow]:
    """The prefill case's rows, one per batch and GRAPH_OPT setting: the median, p10 and p90
    of T_PP over the processes (rounds); rows with warm-up samples say so in their notes
    (WARMUP_MARK). A configuration without samples is a failed row with `reason`."""
    rows = []
    for variant, b in prefill_variants():
        opt = int(variant[-1])
        mine = [s for s in samples if (s.graph_opt, s.batch) == (opt, b)]
        if not mine:
            rows.append(
                failed_row("llama.cpp", PREFILL_CASE, variant, b, LLAMA_PROMPT, "failed", reason)
            )
            continue
        prompts = {s.prompt_tokens for s in mine}
        if len(prompts) != 1:
            raise LaceError(f"batched-bench B={b}: prompt lengths {sorted(prompts)} differ")
        rows.append(
            measured_row(
                "llama.cpp",
                PREFILL_CASE,
                variant,
                b,
                prompts.pop(),
                [s.t_pp_us for s in mine],
                notes=_prefill_notes(mine),
            )
        )
    return rows


def round_orders(rounds: int) -> list[tuple[int, int]]:
    """GRAPH_OPT settings per round: off then on, then on then off, alternating."""
    return [(0, 1) if r % 2 == 0 else (1, 0) for r in range(rounds)]


def model_rows(
    bin_dir: Path,
    model: Path,
    weight_bytes: int,
    rounds: int,
    timeout_s: float,
    raw: list[str],
    log: Callable[[str], None],
    repetitions: int = 5,
    deadline: float = float("inf"),
) -> tuple[list[PeerRow], list[str]]:
    """llama.cpp end to end, GRAPH_OPT off and on in alternating rounds (no round starts after
    `deadline`, a time.time() value): decode rows and, from the same batched-bench output,
    prefill rows; and notes with the per-round on/off ratios."""
    cfg = peer_model_config()
    step: dict[tuple[int, int], list[float]] = defaultdict(list)  # (opt, B) → µs per round
    tg1: dict[int, list[float]] = defaultdict(list)  # opt → llama-bench per-token µs
    prompts: list[PromptSample] = []
    errors: list[str] = []
    for r, order in enumerate(round_orders(rounds)):
        if time.time() > deadline:
            errors.append(f"stopped after {r} of {rounds} rounds (time budget)")
            break
        for opt in order:
            env = {GRAPH_OPT: str(opt)}
            try:
                bench = parse_batched_bench(
                    _run(batched_bench_cmd(bin_dir, model), env, timeout_s, raw)
                )
                for row in bench:
                    step[(opt, row.batch)].append(row.step_us)
                prompts += prompt_samples(bench, opt)
            except LaceError as exc:
                errors.append(f"round {r} batched-bench {GRAPH_OPT}={opt}: {exc}")
            try:
                for run in parse_llama_bench(
                    _run(llama_bench_cmd(bin_dir, model, repetitions), env, timeout_s, raw)
                ):
                    if run.n_prompt == 0 and run.n_gen > 0:
                        tg1[opt].extend(run.step_us_samples)
            except LaceError as exc:
                errors.append(f"round {r} llama-bench {GRAPH_OPT}={opt}: {exc}")
        log(f"  llama.cpp round {r + 1}/{rounds} done ({', '.join(map(str, order))})")
    rows: list[PeerRow] = []
    why = "; ".join(errors)[:300] or "no result"
    for b in LLAMA_BATCHES:
        floor = model_floor_us(cfg, b, weight_bytes, LLAMA_PROMPT + LLAMA_DECODE // 2)
        for opt in (0, 1):
            variant = f"batched-bench {OPT_LABEL}={opt}"
            if step.get((opt, b)):
                rows.append(
                    measured_row(
                        "llama.cpp",
                        MODEL_CASE,
                        variant,
                        b,
                        1,
                        step[(opt, b)],
                        floor_us=floor,
                        notes="host wall time per decode step (T_TG / 128), f16 GGUF, "
                        "-fa off, CUDA graphs on; one sample per round",
                    )
                )
            else:
                rows.append(failed_row("llama.cpp", MODEL_CASE, variant, b, 1, "failed", why))
    for opt in (0, 1):
        variant = f"llama-bench tg{LLAMA_DECODE} {OPT_LABEL}={opt}"
        if tg1.get(opt):
            rows.append(
                measured_row(
                    "llama.cpp",
                    MODEL_CASE,
                    variant,
                    1,
                    1,
                    tg1[opt],
                    floor_us=model_floor_us(cfg, 1, weight_bytes, LLAMA_DECODE // 2),
                    notes=f"host wall time per token, {repetitions} repetitions per round",
                )
            )
        else:
            rows.append(failed_row("llama.cpp", MODEL_CASE, variant, 1, 1, "failed", why))
    rows += prefill_rows(prompts, why)
    notes = []
    for b in LLAMA_BATCHES:
        off, on = step.get((0, b), []), step.get((1, b), [])
        if off and on and len(off) == len(on):
            ratios = ", ".join(f"{a / c:.3f}" for a, c in zip(off, on, strict=True))
            notes.append(f"llama.cpp B={b}: step time off/on per round: {ratios}")
    return rows, notes + errors
