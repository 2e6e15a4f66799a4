"""`lace calibrate`: fit the simulator's kernel model on a recording under data/ (kernel
curves per family, the CUDA-graph launch gap, how co-running kernels share the GPU), score it
on held-out configurations before and after, and write the calibrated GPU spec that
`lace simulate --gpu FILE` accepts (listed in the data folder's manifest, kind gpu-spec)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from concurrency.cli.common import add_format_arg
from concurrency.cli.output import Result
from concurrency.cli.progress import Progress


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="data folder with a manifest (default: the repository's data/)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="where to write the calibrated spec (default: <base>-calibrated.json beside the "
        "recording's replay table, listed in the manifest)",
    )
    p.add_argument(
        "--holdout",
        action="append",
        default=None,
        metavar="SPLIT",
        help="evaluate this held-out split only (repeatable; default: every split: batch, "
        "model:A→B, cross:A→B)",
    )
    p.add_argument(
        "--base",
        default="h200",
        help="the datasheet spec the fit starts from and is scored against (default h200)",
    )
    add_format_arg(p, ("text", "json"))


def run(args: argparse.Namespace, progress: Progress) -> Result:
    from concurrency.calibration import calibrate, default_spec_path, write_calibration
    from concurrency.data import default_folder

    folder = args.data if args.data is not None else default_folder()
    cal = calibrate(folder, base=args.base, splits=args.holdout, on_step=progress.update)
    out = args.out if args.out is not None else default_spec_path(cal)
    given = [] if args.data is None else ["--data", str(args.data)]
    given += [] if args.out is None else ["--out", str(args.out)]
    given += ["--base", args.base]
    given += [a for name in (args.holdout or []) for a in ("--holdout", name)]
    command = "lace calibrate " + shlex.join(given)
    progress.update(f"writing {out}")
    path, entry = write_calibration(cal, out, command)
    summary = cal.summary(("split", "schedule"))
    if args.format == "json":
        return Result.json(
            {
                "spec": str(path),
                "manifest_entry": entry.to_dict() if entry.file else None,
                "gpu": cal.spec.name,
                "launch_gap_us": cal.spec.launch_gap_graph_us,
                "heldout": summary.to_dict("records"),
            }
        )
    lines = [
        f"calibrated {cal.base.name} on {cal.data.device}: {len(cal.data.samples)} kernels, "
        f"{len(cal.data.cases)} step times; launch gap {cal.spec.launch_gap_graph_us:.2f} µs",
        "held-out |error| of the step time, before (datasheet) → after (calibrated):",
        f"{'split':<34} {'streams':<7} {'cases':>5}  {'median':>15}  {'worst':>15}",
    ]
    for r in summary.to_dict("records"):
        lines.append(
            f"{r['split']:<34} {r['schedule']:<7} {r['cases']:>5}  "
            f"{r['before_median']:>6.1%} → {r['after_median']:>6.1%}  "
            f"{r['before_worst']:>6.1%} → {r['after_worst']:>6.1%}"
        )
    lines.append(f"wrote {path} (lace simulate --gpu {path} …)")
    return Result.lines(lines)
