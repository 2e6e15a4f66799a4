"""What a command prints, and the guard that keeps stdout for it alone.

A command returns a `Result` (its JSON document or its text, and its exit status) instead of
printing; `concurrency.cli.main` writes it on stdout once the work is done. While the work
runs, `stdout_to_stderr` sends everything else written to stdout — a library's `print`, a C
library writing to file descriptor 1 — to stderr, so `--format json` output is always exactly
one JSON document that `json.loads` (or `jq`) reads.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True)
class Result:
    """A command's stdout (a JSON document, or text) and its exit status.

    `doc` is set for `--format json` (then `text` is unused); `status` is 0 for success and
    1 for a check that ran and failed (e.g. `lace fidelity` finding a mismatch)."""

    text: str = ""
    doc: object = None
    is_json: bool = False
    status: int = 0

    @classmethod
    def json(cls, doc: object, status: int = 0) -> Result:
        return cls(doc=doc, is_json=True, status=status)

    @classmethod
    def lines(cls, lines: list[str], status: int = 0) -> Result:
        return cls(text="\n".join(lines), status=status)

    def render(self) -> str:
        """The exact stdout text: strict JSON (no NaN or Infinity, which many parsers refuse:
        they become null) or the text, ending in one newline."""
        if self.is_json:
            return json.dumps(_strict(self.doc), indent=1, allow_nan=False) + "\n"
        return self.text + "\n" if self.text else ""


def _strict(value: object) -> object:
    """`value` with every non-finite float replaced by None (JSON null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


@contextmanager
def stdout_to_stderr() -> Iterator[TextIO]:
    """While the block runs, send stdout to stderr; yield the real stdout for the result.

    Python-level writes are redirected by swapping `sys.stdout`; C libraries (loaded through
    ctypes) write to file descriptor 1, which is pointed at descriptor 2 meanwhile, when both
    are open."""
    real = sys.stdout
    real.flush()
    saved_fd = _point_fd1_at_fd2()
    sys.stdout = sys.stderr
    try:
        yield real
    finally:
        sys.stdout.flush()
        sys.stdout = real
        if saved_fd is not None:
            _flush_c_stdio()
            os.dup2(saved_fd, 1)
            os.close(saved_fd)


def _point_fd1_at_fd2() -> int | None:
    """dup2 descriptor 2 onto 1; return a copy of the old descriptor 1 (None: not done, e.g.
    a process started without one of them)."""
    try:
        os.fstat(2)
        saved = os.dup(1)
    except OSError:
        return None
    os.dup2(2, 1)
    return saved


def _flush_c_stdio() -> None:
    """Flush the C library's stdio buffers, so text a C library printed while stdout pointed
    at stderr goes there and not to the restored stdout. Only a library loaded through ctypes
    can have printed, so without ctypes imported there is nothing to flush."""
    if "ctypes" not in sys.modules:
        return
    import ctypes

    with suppress(OSError, AttributeError, TypeError):  # no C library handle on this platform
        ctypes.CDLL(None).fflush(None)
