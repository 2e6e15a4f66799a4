"""A minimal unified-diff applier, for machines without `patch` or `git`:
`python -m concurrency.peers.patching ROOT PATCH` applies PATCH (paths `a/…`, `b/…`, as
`patch -p1`) under ROOT. Each hunk's old lines (context and removals) must occur exactly once
in the file, wherever they moved to; anything else is an error, never a partial write."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from concurrency.errors import LaceError

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass(frozen=True)
class FilePatch:
    path: str  # relative, the `a/` or `b/` prefix stripped
    hunks: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]  # (old lines, new lines)


def parse_patch(text: str) -> tuple[FilePatch, ...]:
    """The files and hunks of a unified diff."""
    files: list[FilePatch] = []
    path = None
    hunks: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    old: list[str] = []
    new: list[str] = []
    in_hunk = False

    def close_hunk() -> None:
        nonlocal old, new, in_hunk
        if in_hunk:
            hunks.append((tuple(old), tuple(new)))
        old, new, in_hunk = [], [], False

    for line in text.splitlines():
        if line.startswith("--- "):
            close_hunk()
            if path is not None:
                files.append(FilePatch(path, tuple(hunks)))
            path, hunks = None, []
            continue
        if line.startswith("+++ "):
            target = line[4:].split("\t")[0].strip()
            path = target.split("/", 1)[1] if "/" in target else target
            continue
        if _HUNK.match(line):
            close_hunk()
            in_hunk = True
            continue
        if not in_hunk:
            continue
        tag, body = line[:1], line[1:]
        if tag == " ":
            old.append(body)
            new.append(body)
        elif tag == "-":
            old.append(body)
        elif tag == "+":
            new.append(body)
        elif line == "":  # an empty context line whose leading space was stripped
            old.append("")
            new.append("")
        elif line.startswith("\\"):
            continue
        else:
            raise LaceError(f"cannot read the patch line {line!r}")
    close_hunk()
    if path is not None:
        files.append(FilePatch(path, tuple(hunks)))
    if not files or not any(f.hunks for f in files):
        raise LaceError("the patch holds no hunk")
    return tuple(files)


def apply_to_text(text: str, patch: FilePatch) -> str:
    lines = text.split("\n")
    for old, new in patch.hunks:
        n = len(old)
        hits = [i for i in range(len(lines) - n + 1) if tuple(lines[i : i + n]) == old]
        if len(hits) != 1:
            raise LaceError(
                f"{patch.path}: a hunk's {n} old lines occur {len(hits)} times, not once; "
                "is this the llama.cpp the patch was made for (or is it applied already)?"
            )
        i = hits[0]
        lines[i : i + n] = list(new)
    return "\n".join(lines)


def apply_patch(root: Path, patch_text: str) -> list[str]:
    """Apply every file of the patch under `root`; all files are checked before any is written.
    Returns the patched paths."""
    results = {}
    for fp in parse_patch(patch_text):
        target = Path(root) / fp.path
        if not target.is_file():
            raise LaceError(f"the patch names {fp.path}, which is not under {root}")
        results[target] = apply_to_text(target.read_text(encoding="utf-8"), fp)
    for target, text in results.items():
        target.write_text(text, encoding="utf-8")
    return [str(t) for t in results]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m concurrency.peers.patching ROOT PATCH", file=sys.stderr)
        return 2
    try:
        done = apply_patch(Path(args[0]), Path(args[1]).read_text(encoding="utf-8"))
    except (LaceError, OSError) as exc:
        print(f"patching: error: {exc}", file=sys.stderr)
        return 1
    print("patched " + ", ".join(done))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
