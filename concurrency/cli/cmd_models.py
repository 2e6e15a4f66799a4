"""`lace models`: the model presets; its help ends with the config-file keys."""

from __future__ import annotations

import argparse

from concurrency.cli.common import add_format_arg
from concurrency.cli.output import Result
from concurrency.cli.progress import Progress


def add_arguments(p: argparse.ArgumentParser) -> None:
    from concurrency.graph.config import config_keys_text

    p.description = (
        "List the model presets: their shapes and whether every figure is verified. "
        "Any --model option also takes a config file of the keys below."
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = config_keys_text()
    add_format_arg(p)


def run(args: argparse.Namespace, progress: Progress) -> Result:
    from concurrency.graph.config import PRESETS

    if args.format == "json":
        return Result.json({n: c.to_dict() for n, c in PRESETS.items()})
    lines = [
        f"{'model':20} {'arch':10} {'layers':>6} {'n_embd':>6} {'Hk/Hv':>7} {'heads':>7}  verified"
    ]
    for c in PRESETS.values():
        flag = "yes" if c.verified else "no: " + ", ".join(c.unverified_fields)
        lines.append(
            f"{c.name:20} {c.arch:10} {c.n_layer:>6} {c.n_embd:>6} "
            f"{c.ssm_n_group:>3}/{c.ssm_dt_rank:<3} {c.n_head:>3}/{c.n_head_kv:<3}  {flag}"
        )
    return Result.lines(lines)
