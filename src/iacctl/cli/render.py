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

from iacctl.domain.lifecycle import Stage


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
          fold: Sequence[str] = ()) -> None:
    """A table: rich on a terminal (fitted to its width: only the `fold` columns, free text such
    as names, are wrapped; the others never are), aligned plain columns otherwise."""
    if not rows:
        sys.stdout.write(empty + "\n")
        return
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    if fancy(sys.stdout):
        from rich.console import Console
        from rich.table import Table

        t = Table(box=None, header_style="bold")
        for c in columns:
            t.add_column(c.upper(), no_wrap=c not in fold, overflow="fold")
        for row in cells:
            t.add_row(*row)
        Console().print(t)
        return
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    sys.stdout.write("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n")
    for row in cells:
        sys.stdout.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")


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
