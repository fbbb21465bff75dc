"""The task log (SPEC E4): every line of Terraform's output, redacted (X2), shown as it comes and
stored encrypted in batches. Storing never loses a line: lines are queued first, and a failed
write keeps them queued for the next flush."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterable

from iacctl.domain.diagnostics import plain
from iacctl.domain.masking import mask_text, maskable
from iacctl.executor.progress import Reporter
from iacctl.store import repo
from iacctl.store.db import Store

REDACTED = "(sensitive value)"
_FLUSH_LINES = 200
# Issue 23: lines reach the store in batches (one transaction a second at most while Terraform
# prints), and a follower on another machine (`tasks logs -f`) within 2 s.
_FLUSH_SECONDS = 1.0
_RECENT_LINES = 400


class TaskLog:
    def __init__(self, store: Store, task_id: int, reporter: Reporter, secrets: Iterable[str] = ()) -> None:
        self.store = store
        self.task_id = task_id
        self.reporter = reporter
        self._secrets = maskable(secrets)
        self._lock = threading.Lock()
        self._queue: list[tuple[float, str]] = []
        self._last_flush = time.monotonic()
        with store.read() as session:
            self._seq = repo.last_log_seq(session, task_id)
        # Issue 13 item 6: when Terraform cannot write its state it prints the whole state as
        # JSON (from a line "{" to a line "}"), sensitive attribute values included. Such lines
        # are held until the document ends; a state is kept here, never shown or logged (X2).
        self._held: list[str] | None = None
        self.printed_state: bytes | None = None
        # Issue 9: the last lines Terraform printed, redacted, where a failure finds its reason.
        self.recent: deque[str] = deque(maxlen=_RECENT_LINES)

    def redact(self, text: str) -> str:
        return mask_text(text, self._secrets, REDACTED)

    def terraform_line(self, raw: str) -> None:
        # Colour codes (Terraform on a terminal) go to the terminal, never into the stored log.
        text = plain(raw)
        if text != raw and self._held is None and text != "{":
            self._emit(text, shown=raw)
            return
        if self._held is None and text == "{":
            self._held = [text]
            return
        if self._held is not None:
            self._held.append(text)
            if text == "}":
                self._release_held()
            return
        self._emit(text)

    def end_output(self) -> None:
        """The command has ended: lines held as a possible state document go out as they are."""
        held, self._held = self._held, None
        for line in held or []:
            self._emit(line)

    def _release_held(self) -> None:
        held, self._held = self._held or [], None
        document = "\n".join(held)
        try:
            doc = json.loads(document)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and "lineage" in doc and "serial" in doc:
            self.printed_state = document.encode()
            self.note(f"Terraform printed the state it could not write ({len(held)} lines, serial "
                      f"{doc['serial']}); iacctl keeps it and does not show or log it: it holds secrets")
            return
        for line in held:
            self._emit(line)

    def _emit(self, text: str, *, shown: str | None = None) -> None:
        try:
            text = self.redact(text)
            shown = text if shown is None else self.redact(shown)
        finally:
            # H4: whatever happens to one line, the stream goes on.
            self._push(text)
            self.recent.append(text)
            try:
                self.reporter.line(text if shown is None else shown)
            except Exception:
                pass

    def note(self, text: str, *, show: bool = True) -> None:
        """A line of iacctl's own in the log; `show=False` for the task's final word, which the
        command prints on stderr anyway."""
        text = self.redact(text)
        self._push(f"iacctl: {text}")
        if show:
            self.reporter.note(text)

    def _push(self, text: str) -> None:
        with self._lock:
            self._queue.append((time.time(), text))
            due = len(self._queue) >= _FLUSH_LINES or time.monotonic() - self._last_flush > _FLUSH_SECONDS
        if due:
            self.flush(quiet=True)

    def flush(self, *, quiet: bool = False) -> None:
        with self._lock:
            if not self._queue:
                self._last_flush = time.monotonic()
                return
            lines = list(self._queue)
            cipher = self.store.cipher
            blobs = [cipher.encrypt_text(line) for _, line in lines]
            try:
                with self.store.write() as session:
                    repo.append_logs(session, self.task_id, self._seq + 1, blobs, [at for at, _ in lines])
            except Exception:
                if quiet:
                    return  # kept queued; the next flush retries
                raise
            self._seq += len(lines)
            del self._queue[: len(lines)]
            self._last_flush = time.monotonic()

    def flush_if_due(self) -> None:
        if time.monotonic() - self._last_flush > _FLUSH_SECONDS:
            self.flush(quiet=True)
