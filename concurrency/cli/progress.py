"""Progress of long commands, on stderr.

stdout carries only a command's result, so progress goes to stderr, and only for work that
lasts: nothing is written until the command has run `DELAY_S` seconds, so quick commands (and
tests) print no progress at all. From then on each update is shown: on a terminal as one line
rewritten in place and erased when the command ends, elsewhere (a log, CI) as plain lines such
as `lace: planning 8 policies (3/8: alloc_dep) …`. `--quiet` turns it off.

Work counted in items (a sweep's cases) gets a `Meter`: a bar, the count, the rate and the
time left, redrawn at most every `TTY_INTERVAL_S` on a terminal and written at most every
`LOG_INTERVAL_S` elsewhere, so a long sweep does not flood a log.

A timer thread shows the latest update when the delay has passed, so one long stage that
started early is still announced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO, TypeVar

T = TypeVar("T")

#: Work shorter than this shows no progress.
DELAY_S = 2.0
#: A meter redraws its terminal line at most this often, and logs a line at most this often.
TTY_INTERVAL_S = 0.2
LOG_INTERVAL_S = 10.0
_PREFIX = "lace: "


class Progress:
    """Status updates for one command run; call `close()` when the command ends.

    `stream` is where lines go (stderr); `enabled` False (`--quiet`) or `stream` None makes
    every call a no-op. `delay_s` defaults to `DELAY_S`; `tty` (default: whether `stream` is a
    terminal) picks in-place updates over plain lines."""

    def __init__(
        self,
        stream: TextIO | None,
        *,
        enabled: bool = True,
        delay_s: float | None = None,
        tty: bool | None = None,
    ) -> None:
        self._stream = stream if enabled else None
        self._tty = _is_tty(stream) if tty is None else tty
        self._lock = threading.Lock()
        self._message: str | None = None
        self._drawn = False  # a rewritable line is on the terminal
        self._timer: threading.Timer | None = None
        delay = DELAY_S if delay_s is None else delay_s
        self._showing = self._stream is not None and delay <= 0
        if self._stream is not None and not self._showing:
            self._timer = threading.Timer(delay, self._start_showing)
            self._timer.daemon = True
            self._timer.start()

    def update(self, message: str) -> None:
        """Say what the command is doing now (shown at once after the delay, else kept)."""
        if self._stream is None:
            return
        with self._lock:
            self._message = message
            if self._showing:
                self._write(message)

    def steps(
        self, what: str, items: Sequence[T], label: Callable[[T], object] = str
    ) -> Iterator[T]:
        """Yield `items`, updating "`what` (i/n: label) …" before each one."""
        n = len(items)
        for i, item in enumerate(items, 1):
            self.update(f"{what} ({i}/{n}: {label(item)})")
            yield item

    def callback(self, what: str, total: int) -> Callable[[object], None]:
        """A function to hand to library code that reports each item it starts (a policy
        name, a path): each call updates "`what` (i/total: item) …"."""
        count = [0]

        def report(item: object) -> None:
            count[0] += 1
            self.update(f"{what} ({count[0]}/{total}: {item})")

        return report

    def meter(self, what: str, total: int, unit: str = "") -> Meter:
        """A counter of `total` items for work that reports as items finish."""
        return Meter(self, what, total, unit)

    @property
    def is_terminal(self) -> bool:
        """Whether updates rewrite one terminal line (else they are plain lines)."""
        return self._tty

    def close(self) -> None:
        """Stop the timer and erase an in-place line, so the result prints on a clean line."""
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            self._showing = False
            if self._drawn and self._stream is not None:
                self._stream.write("\r\x1b[K")
                self._stream.flush()
                self._drawn = False

    def _start_showing(self) -> None:
        with self._lock:
            if self._stream is None or self._showing:
                return
            self._showing = True
            if self._message is not None:
                self._write(self._message)

    def _write(self, message: str) -> None:
        assert self._stream is not None
        text = f"{_PREFIX}{message} …"
        if self._tty:
            self._stream.write(f"\r\x1b[K{text}")
            self._drawn = True
        else:
            self._stream.write(text + "\n")
        self._stream.flush()


class Meter:
    """Items done out of a total: `what [#####---------------] 12/48 cases, 3.1/s, 12 s
    left`. `advance(n)` after each n items; the line is passed to the Progress when the
    interval for its kind of stream has passed, and when the last item is done."""

    def __init__(
        self,
        progress: Progress,
        what: str,
        total: int,
        unit: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._progress = progress
        self._what = what
        self._total = max(total, 0)
        self._unit = f" {unit}" if unit else ""
        self._clock = clock
        self._start = clock()
        self._shown_at: float | None = None
        self._interval = TTY_INTERVAL_S if progress.is_terminal else LOG_INTERVAL_S
        self.done = 0
        progress.update(self.text())

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self._clock()
        finished = self.done >= self._total
        if finished or self._shown_at is None or now - self._shown_at >= self._interval:
            self._shown_at = now
            self._progress.update(self.text(now))

    def text(self, now: float | None = None) -> str:
        """The meter's line as of `now` (default: the clock's time)."""
        now = self._clock() if now is None else now
        total, done = self._total, min(self.done, self._total)
        width = 20
        filled = width * done // total if total else width
        line = f"{self._what} [{'#' * filled}{'-' * (width - filled)}] {done}/{total}{self._unit}"
        elapsed = now - self._start
        if done and elapsed > 0:
            rate = done / elapsed
            line += f", {rate:.3g}/s"
            if done < total:
                line += f", {format_duration((total - done) / rate)} left"
        return line


def format_duration(seconds: float) -> str:
    """'<1 s', '42 s', '3 min 5 s', '2 h 7 min': a time left, as a person says it."""
    if seconds < 1:
        return "<1 s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _is_tty(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        return False
