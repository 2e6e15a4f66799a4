"""Errors LACE raises on bad input.

Every error names the problem and the fix in one message, so the CLI can print it on one line
and a notebook user sees a sentence instead of a traceback from deep inside the library.
"""

from __future__ import annotations


class LaceError(ValueError):
    """Base class: a user-facing problem with a one-line message that names the fix."""


class ConfigError(LaceError):
    """A model config or graph request that cannot describe a real model or graph."""


class UnknownNameError(LaceError):
    """A preset, policy, detector, layer kind or mode name that LACE does not know."""

    def __init__(
        self, what: str, name: object, known: list[str] | tuple[str, ...], hint: str = ""
    ) -> None:
        self.what = what
        self.name = name
        self.known = tuple(known)
        more = f" ({hint})" if hint else ""
        super().__init__(f"unknown {what} {name!r}; choose one of: {', '.join(self.known)}{more}")


class MissingToolError(LaceError):
    """An external program or optional package that a feature needs is not installed."""
