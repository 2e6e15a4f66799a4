"""Prefill rows added afterwards to a recorded peers run, from its raw llama.cpp output:
`python -m concurrency.peers.backfill --raw llama-raw.txt --peers peers.json`.

A run recorded before the harness kept batched-bench's prompt phase still holds it in
`llama-raw.txt` (every llama.cpp program's output, one section per command, as
`llama_peers._run` wrote it). This reads that log's llama-batched-bench sections with the
harness's own parser and rules (`parse_batched_bench`, `prompt_samples`, `prefill_rows`),
replaces the file's prefill rows with them, and says so in the file's notes. Running it twice
gives the same file.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from concurrency.errors import LaceError
from concurrency.peers.llama_peers import (
    GRAPH_OPT,
    PREFILL_CASE,
    PromptSample,
    prefill_rows,
    prompt_samples,
)
from concurrency.peers.parse import parse_batched_bench
from concurrency.peers.results import PeerRow, load_results, save_results
from concurrency.peers.table import WARMUP_MARK

#: How the note this backfill adds to the peers file's metadata starts (replaced on a re-run).
NOTE_PREFIX = "prefill rows"
_EXIT = re.compile(r"^\(exit (-?\d+)\)\s*$")
_OPT = re.compile(rf"(?:^|\s){GRAPH_OPT}=(\d+)(?:\s|$)")


@dataclass(frozen=True)
class RawSection:
    """One command of a raw log: the line its `$ ` header is on (1-based), the header, the
    program's output, and its exit status (None: no `(exit N)` line, e.g. a timeout)."""

    line: int
    header: str
    body: str
    exit_code: int | None

    @property
    def is_batched_bench(self) -> bool:
        return "llama-batched-bench" in self.header


def raw_sections(text: str) -> tuple[RawSection, ...]:
    """The command sections of a raw log: each starts at a line beginning with `$ `."""
    heads = [i for i, line in enumerate(text.splitlines()) if line.startswith("$ ")]
    lines = text.splitlines()
    sections = []
    for k, i in enumerate(heads):
        body = lines[i + 1 : heads[k + 1] if k + 1 < len(heads) else len(lines)]
        codes = [int(m.group(1)) for ln in body if (m := _EXIT.match(ln.strip()))]
        sections.append(RawSection(i + 1, lines[i], "\n".join(body), codes[-1] if codes else None))
    return tuple(sections)


def _fix(path: Path) -> str:
    return (
        f"the raw log is damaged or not a `python -m concurrency.peers.device` llama-raw.txt: "
        f"restore it (`git checkout -- {path}`) or pass the llama-raw.txt of the run's output"
    )


def raw_prompt_samples(path: Path) -> tuple[tuple[PromptSample, ...], ...]:
    """Every prompt phase in the raw log at `path`, per llama-batched-bench process that
    exited 0 (as the harness, which drops a failed run): one sample per batch, warm-up flagged
    within the process. A malformed section is a LaceError naming the file, the line and the
    fix."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise LaceError(f"cannot read the raw log {path} ({exc.strerror}); {_fix(path)}") from None
    processes: list[tuple[PromptSample, ...]] = []
    benches = [s for s in raw_sections(text) if s.is_batched_bench]
    if not benches:
        raise LaceError(f"{path} holds no llama-batched-bench section; {_fix(path)}")
    for sec in benches:
        if sec.exit_code != 0:
            continue
        opt = _OPT.search(sec.header)
        if opt is None:
            raise LaceError(f"{path}:{sec.line}: the command names no {GRAPH_OPT}; {_fix(path)}")
        try:
            rows = parse_batched_bench(sec.body)
        except LaceError as exc:
            raise LaceError(
                f"{path}:{sec.line}: the run on this line: {exc}; {_fix(path)}"
            ) from None
        if not rows:
            raise LaceError(f"{path}:{sec.line}: exit 0 but no result rows; {_fix(path)}")
        processes.append(prompt_samples(rows, int(opt.group(1))))
    if not processes:
        raise LaceError(f"{path}: no llama-batched-bench run exited 0; {_fix(path)}")
    return tuple(processes)


def backfill_prefill(raw: Path, peers: Path) -> tuple[PeerRow, ...]:
    """Replace the llama.cpp prefill rows of the peers file `peers` with those parsed from
    `raw` (the same run's llama-raw.txt), note it in the file's metadata, write the file, and
    return the new prefill rows."""
    processes = raw_prompt_samples(raw)
    meta, rows = load_results(peers)
    samples = [s for process in processes for s in process]
    added = prefill_rows(samples, f"no sample in {Path(raw).name}")
    kept = [r for r in rows if not (r.peer == "llama.cpp" and r.case == PREFILL_CASE)]
    note = (
        f"{NOTE_PREFIX} ('{PREFILL_CASE}', llama.cpp) parsed afterwards from {Path(raw).name} of "
        f"the same run (python -m concurrency.peers.backfill): T_PP of {len(processes)} "
        "llama-batched-bench processes, one sample per process; rows whose samples include a "
        "process's warm-up are marked WARM-UP"
    )
    notes = (*(n for n in meta.notes if not n.startswith(NOTE_PREFIX)), note)
    save_results(peers, dataclasses.replace(meta, notes=notes), [*kept, *added])
    return tuple(added)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m concurrency.peers.backfill",
        description="Add the llama.cpp prefill rows to a peers.json from the same run's "
        "llama-raw.txt.",
    )
    ap.add_argument("--raw", type=Path, required=True, help="the run's llama-raw.txt")
    ap.add_argument("--peers", type=Path, required=True, help="the run's peers.json")
    args = ap.parse_args(argv)
    try:
        added = backfill_prefill(args.raw, args.peers)
    except LaceError as exc:
        print(f"lace: error: {exc}", file=sys.stderr)
        return 2
    for r in added:
        mark = f" ({WARMUP_MARK})" if WARMUP_MARK in r.notes else ""
        median = "—" if r.median_us is None else f"{r.median_us:.0f} µs"
        print(f"{r.variant} B={r.batch}: {median}, {r.rounds} samples{mark}")
    print(f"wrote {args.peers}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
