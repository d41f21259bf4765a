"""How the driver shows an error: its last non-empty line, escaped for rich."""

from __future__ import annotations

from rich.markup import escape


def first_line(err: BaseException) -> str:
    """The error's last non-empty line (where Ray and gloo put the cause), at most 300 characters."""
    text = str(err).strip().splitlines()
    return next((line for line in reversed(text) if line.strip()), type(err).__name__)[:300]


def shown(err: BaseException) -> str:
    """`err` for the console: errors quote text like gloo's `[/path/pair.cc:537]`, which rich would take for
    a closing markup tag and raise on, killing the run that was reporting a failure it survives."""
    return escape(first_line(err))
