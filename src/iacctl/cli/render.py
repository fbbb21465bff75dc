"""Rendering: JSON documents, tables, and progress while a task runs (SPEC C2, C4).

Progress goes to stdout, or to stderr when stdout carries a --json document. Rich styling
only on a terminal without NO_COLOR and outside CI; plain lines otherwise.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import typer

from iacctl.domain.lifecycle import Stage

# Issue 21: where a terminal is too narrow for every column, the less important ones are left
# out; this shows them all (each value whole, lines as long as they need).
WIDE = typer.Option(False, "--wide", help="Show every column, however wide the terminal.")


def write(stream: TextIO, text: str) -> None:
    """Write and flush, whoever reads. Issue 19 item 6: a reader that went away (`| head`
    closed the pipe, the terminal vanished) never fails the command or its task: the stream is
    pointed at /dev/null and the command goes on silently, as a detached one would."""
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        silence(stream)


def silence(stream: TextIO) -> None:
    """Point the stream's file descriptor at /dev/null, so that later writes (and Python's
    flush at exit) succeed unseen instead of raising BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def print_json(doc: Any) -> None:
    # Indented for a person at a terminal; compact for pipes and scripts, where the C encoder
    # keeps a 10,000-task listing fast.
    if sys.stdout.isatty():
        text = json.dumps(doc, indent=2)
    else:
        text = json.dumps(doc, separators=(",", ":"))
    write(sys.stdout, text + "\n")


def fancy(stream: TextIO) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR") and not os.environ.get("CI")


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str = "nothing to show",
          fold: Sequence[str] = (), optional: Sequence[str] = (), wide: bool = False) -> None:
    """A table. Piped (or with `wide`), aligned plain columns, every value whole. On a terminal,
    fitted to its width (issue 21): values are never cut. The `fold` columns (free text) may
    wrap; when the table is still too wide, the `optional` columns are left out, least
    important first (as kubectl does; `--wide` shows them); when even that does not fit, each
    row is stacked, one `COLUMN: value` line each, as `terraform show` lists attributes."""
    if not rows:
        sys.stdout.write(empty + "\n")
        return
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    if wide or not sys.stdout.isatty():
        _plain_table(columns, cells)
        return
    layout = fit_columns(columns, cells, _terminal_width(), fold=fold, optional=optional)
    bold = fancy(sys.stdout)
    if layout is None:
        for n, row in enumerate(cells):
            if n:
                sys.stdout.write("\n")
            for k, (c, v) in enumerate(zip(columns, row, strict=True)):
                if k and not v:
                    continue
                name = f"{c.upper()}:"
                sys.stdout.write((f"\x1b[1m{name}\x1b[0m" if bold else name) + f" {v}".rstrip() + "\n")
        return
    shown, widths = layout
    dropped = [c for c in columns if c not in shown]
    index = [columns.index(c) for c in shown]
    header = "  ".join(c.upper().ljust(w) for c, w in zip(shown, widths, strict=True)).rstrip()
    sys.stdout.write((f"\x1b[1m{header}\x1b[0m" if bold else header) + "\n")
    for row in cells:
        parts = [_wrap(row[i], w) if c in fold else [row[i]] for i, c, w in zip(index, shown, widths, strict=True)]
        for k in range(max(len(p) for p in parts)):
            line = "  ".join((p[k] if k < len(p) else "").ljust(w) for p, w in zip(parts, widths, strict=True))
            sys.stdout.write(line.rstrip() + "\n")
    if dropped:
        sys.stdout.write(f"({', '.join(c.upper() for c in dropped)} left out at this width: --wide shows them)\n")


FOLD_MIN = 12


def fit_columns(columns: Sequence[str], cells: Sequence[Sequence[str]], width: int, *,
                fold: Sequence[str] = (), optional: Sequence[str] = ()) -> tuple[list[str], list[int]] | None:
    """The columns shown and their widths on a terminal `width` wide, every value whole except
    that `fold` columns wrap (never below FOLD_MIN); None when rows must be stacked."""
    natural = {c: max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)}
    shown = list(columns)

    def least(cols: Sequence[str]) -> int:
        return sum(min(natural[c], FOLD_MIN) if c in fold else natural[c] for c in cols) + 2 * (len(cols) - 1)

    for c in optional:
        if least(shown) <= width:
            break
        shown.remove(c)
    if least(shown) > width:
        return None
    widths = {c: natural[c] for c in shown}
    excess = sum(widths.values()) + 2 * (len(shown) - 1) - width
    while excess > 0:
        # Narrow the widest foldable column, one column at a time, down to FOLD_MIN.
        c = max((c for c in shown if c in fold and widths[c] > FOLD_MIN), key=lambda c: widths[c])
        cut = min(excess, widths[c] - FOLD_MIN)
        widths[c] -= cut
        excess -= cut
    return shown, [widths[c] for c in shown]


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]


def _terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((80, 24)).columns


def _plain_table(columns: Sequence[str], cells: Sequence[Sequence[str]]) -> None:
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    sys.stdout.write("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n")
    for row in cells:
        sys.stdout.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")


def nothing_listed(what: str, filters: Sequence[tuple[str, Any]], empty: str) -> str:
    """Issue 21: what an empty listing says. With a filter given, that nothing matches it (the
    store may hold plenty): `no tasks match --status failed`; with none, `empty`, which says
    how the listing gets filled."""
    given = [f"{option} {value}" if value is not True else option for option, value in filters
             if value not in (None, False, "")]
    if given:
        return f"no {what} match {' '.join(given)}"
    return empty


def message(text: str, *, err: bool = False) -> None:
    write(sys.stderr if err else sys.stdout, text + "\n")


class TerminalReporter:
    """Shows each stage as it starts and Terraform's lines as they come (C4)."""

    def __init__(self, *, to_stderr: bool, show_output: bool) -> None:
        self.stream: TextIO = sys.stderr if to_stderr else sys.stdout
        self.show_output = show_output
        self._console: Any = None
        if fancy(self.stream):
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False, soft_wrap=True)
        # Issue 9: on a terminal Terraform keeps its colours (red destroys, green creates).
        self.color = self._console is not None and show_output

    def stage(self, task_id: int, stage: Stage) -> None:
        if self._console is not None:
            self._rich(f"[bold cyan]▸ task {task_id}: {stage}[/]")
        else:
            self._plain(f"[task {task_id}] stage: {stage}")

    def line(self, text: str) -> None:
        if not self.show_output:
            return
        # Terraform's lines go out as Terraform wrote them (its colours included), never
        # re-wrapped at the terminal's width.
        self._plain(text)

    def note(self, text: str) -> None:
        if self._console is not None:
            from rich.text import Text

            # iacctl's own notes are information, not warnings: a dim prefix, plain text.
            self._rich(Text.assemble(("iacctl: ", "dim"), text))
        else:
            self._plain(f"iacctl: {text}")

    def summary(self, text: str) -> None:
        """On stderr whatever else goes where, so a --json document on stdout stays alone."""
        write(sys.stderr, f"iacctl: {text}\n")

    def _rich(self, text: Any) -> None:
        try:
            self._console.print(text)
        except (OSError, ValueError):  # the terminal went away: see write()
            silence(self.stream)
            self._console = None

    def _plain(self, text: str) -> None:
        write(self.stream, text + "\n")
