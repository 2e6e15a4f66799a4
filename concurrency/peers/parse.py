"""Parsers for the llama.cpp programs' output: test-backend-ops in perf mode (console format),
llama-batched-bench (its Markdown table or `--output-format jsonl`) and llama-bench
(`-o jsonl`). Each returns frozen values; a line that looks like a result but does not parse is
an error naming the line, never a silently dropped row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from concurrency.errors import LaceError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def strip_ansi(text: str) -> str:
    """`text` without terminal colour codes (test-backend-ops colours its figures)."""
    return _ANSI.sub("", text)


# ---------------------------------------------------------------------------- test-backend-ops
@dataclass(frozen=True)
class OpPerf:
    """One test-backend-ops perf result: the op, its parameters, and the mean time per run."""

    op: str
    params: tuple[tuple[str, str], ...]
    supported: bool
    runs: int = 0
    us_per_run: float = 0.0

    def param(self, key: str) -> str:
        for k, v in self.params:
            if k == key:
                return v
        raise LaceError(f"{self.op} result has no parameter {key!r} (has {dict(self.params)})")

    def int_param(self, key: str) -> int:
        return int(self.param(key))


def split_params(text: str) -> tuple[tuple[str, str], ...]:
    """`type=f32,ne=[4,2,1,1],v=3` → (("type", "f32"), ("ne", "[4,2,1,1]"), ("v", "3")):
    commas inside brackets or parentheses belong to the value."""
    items: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if text[start:]:
        items.append(text[start:])
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise LaceError(f"test-backend-ops parameter {item!r} has no '=' (in {text!r})")
        out.append((key.strip(), value.strip()))
    return tuple(out)


# "  OP(params):   <spaces>   123 runs -     5.03 us/run - ..." or "  OP(params): not supported"
_PERF_HEAD = re.compile(r"^\s*([A-Z][A-Z0-9_]*)\((.*)\):\s*(.*)$")
_PERF_FIGURES = re.compile(r"^(\d+)\s+runs\s+-\s+([0-9.]+(?:[eE][-+]?\d+)?)\s+us/run\b")


def parse_backend_ops_perf(text: str, op: str | None = None) -> tuple[OpPerf, ...]:
    """Every perf result line of `test-backend-ops perf` console output (of `op` only, when
    given). Lines of other kinds (backend banners, summaries) are skipped."""
    results = []
    for raw in strip_ansi(text).splitlines():
        m = _PERF_HEAD.match(raw)
        if not m:
            continue
        name, params, rest = m.group(1), m.group(2), m.group(3).strip()
        if op is not None and name != op:
            continue
        if rest.startswith("not supported"):
            results.append(OpPerf(name, split_params(params), supported=False))
            continue
        f = _PERF_FIGURES.match(rest)
        if not f:
            if "runs" in rest or "us/run" in rest:
                raise LaceError(f"cannot read the test-backend-ops perf line {raw.strip()!r}")
            continue  # a test-mode line ("OK", "FAIL") or a skip notice
        results.append(
            OpPerf(
                name,
                split_params(params),
                supported=True,
                runs=int(f.group(1)),
                us_per_run=float(f.group(2)),
            )
        )
    return tuple(results)


# ---------------------------------------------------------------------------- llama-batched-bench
@dataclass(frozen=True)
class BatchedBenchRow:
    """One llama-batched-bench row: `batch` sequences, `pp` prompt tokens each, then `tg`
    decode steps of `batch` tokens."""

    pp: int
    tg: int
    batch: int
    n_kv: int
    t_pp_s: float
    s_pp: float
    t_tg_s: float
    s_tg: float

    @property
    def step_us(self) -> float:
        """Mean time of one decode step (all `batch` sequences advance one token)."""
        if self.tg <= 0 or self.t_tg_s <= 0:
            raise LaceError(f"batched-bench row B={self.batch} has no decode time (tg={self.tg})")
        return self.t_tg_s / self.tg * 1e6


_MD_ROW = re.compile(r"^\|\s*\d")


def parse_batched_bench(text: str) -> tuple[BatchedBenchRow, ...]:
    """The result rows of llama-batched-bench output, Markdown table or JSONL (both may mix
    with log lines; a row that does not parse is an error)."""
    rows = []
    for raw in strip_ansi(text).splitlines():
        line = raw.strip()
        if line.startswith("{") and '"speed_tg"' in line:
            try:
                d = json.loads(line)
                rows.append(
                    BatchedBenchRow(
                        pp=int(d["pp"]),
                        tg=int(d["tg"]),
                        batch=int(d["pl"]),
                        n_kv=int(d["n_kv"]),
                        t_pp_s=float(d["t_pp"]),
                        s_pp=float(d["speed_pp"]),
                        t_tg_s=float(d["t_tg"]),
                        s_tg=float(d["speed_tg"]),
                    )
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                msg = f"cannot read the batched-bench JSON line {line!r} ({exc})"
                raise LaceError(msg) from None
            continue
        if _MD_ROW.match(line):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) != 10:
                raise LaceError(f"batched-bench row {line!r} has {len(cells)} cells, expected 10")
            try:
                pp, tg, b, n_kv = (int(c) for c in cells[:4])
                t_pp, s_pp, t_tg, s_tg = (float(c) for c in cells[4:8])
            except ValueError:
                raise LaceError(f"cannot read the batched-bench row {line!r}") from None
            rows.append(BatchedBenchRow(pp, tg, b, n_kv, t_pp, s_pp, t_tg, s_tg))
    return tuple(rows)


# ---------------------------------------------------------------------------- llama-bench
@dataclass(frozen=True)
class LlamaBenchRun:
    """One llama-bench test (`-o jsonl`): `n_gen` decode tokens (or `n_prompt` prompt tokens)
    per repetition, one sample per repetition."""

    n_prompt: int
    n_gen: int
    n_batch: int
    samples_ns: tuple[int, ...]
    build_commit: str
    gpu_info: str
    model_size: int

    @property
    def step_us_samples(self) -> tuple[float, ...]:
        """Per-token decode time of each repetition (µs), for a tg test (n_prompt 0)."""
        if self.n_gen <= 0 or self.n_prompt:
            raise LaceError("step times exist for decode tests only (-p 0 -n N)")
        return tuple(s / 1e3 / self.n_gen for s in self.samples_ns)


def parse_llama_bench(lines: Iterable[str] | str) -> tuple[LlamaBenchRun, ...]:
    """The tests of llama-bench `-o jsonl` output (one JSON object per line; other lines are
    log output and skipped)."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    runs = []
    for raw in lines:
        line = raw.strip()
        if not (line.startswith("{") and '"samples_ns"' in line):
            continue
        try:
            d = json.loads(line)
            runs.append(
                LlamaBenchRun(
                    n_prompt=int(d["n_prompt"]),
                    n_gen=int(d["n_gen"]),
                    n_batch=int(d["n_batch"]),
                    samples_ns=tuple(int(s) for s in d["samples_ns"]),
                    build_commit=str(d.get("build_commit", "")),
                    gpu_info=str(d.get("gpu_info", "")),
                    model_size=int(d.get("model_size", 0)),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            msg = f"cannot read the llama-bench JSON line {line[:120]!r} ({exc})"
            raise LaceError(msg) from None
    return tuple(runs)
