"""The one exception tree of iacctl. Each class carries its exit code (SPEC C3).

The CLI catches `IacctlError` once, at the top, prints `str(error)` on one line to stderr and
exits with `error.exit_code`. Nothing else maps errors to exit codes.
"""

from __future__ import annotations

# SPEC C3 exit codes, named once.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CHANGES = 2
EXIT_CANCELLED = 3
EXIT_REPLANNED = 4
EXIT_REFUSED = 5
EXIT_USAGE = 64


class IacctlError(Exception):
    """Base of every error iacctl reports to the user."""

    exit_code = EXIT_FAILED
    # Issue 19 item 5: the task the error is about, if one exists (`--json` then prints it).
    task_id: int | None = None

    def about(self, task_id: int) -> IacctlError:
        """This error, naming the task it is about."""
        self.task_id = task_id
        return self


class UsageError(IacctlError):
    """Bad flag values, odd names, missing directories: the user's input is wrong."""

    exit_code = EXIT_USAGE


class NotFound(UsageError):
    """An unknown workspace name, task id, pool or state version."""


class Refused(IacctlError):
    """The request is understood but not allowed now (wrong status, lock held, stale plan)."""

    exit_code = EXIT_REFUSED


class TransitionRefused(Refused):
    """A status change that the lifecycle table does not allow (L3)."""


class TransitionConflict(Refused):
    """The task's status changed under us (the compare-and-set lost the race)."""


class WorkspaceLocked(Refused):
    """A task needs the workspace lock that someone else holds (L5)."""


class SlotNotReserved(Refused):
    """The slot a plan reserved for its apply is no longer reserved for it (S2, E6)."""


class TaskFailed(IacctlError):
    """A task ended failed; the message says at which stage and why."""


class TaskCancelled(IacctlError):
    """A task was cancelled (by `iacctl cancel`, Ctrl-C or SIGTERM)."""

    exit_code = EXIT_CANCELLED


class Replanned(IacctlError):
    """S5: the plan context was lost, the task was planned again and needs a new confirmation."""

    exit_code = EXIT_REPLANNED


class TerraformError(TaskFailed):
    """Terraform itself failed (non-zero exit, missing binary)."""


class StoreError(IacctlError):
    """The store cannot be opened, migrated or written."""


class SecretKeyError(IacctlError):
    """The encryption key is missing, malformed or does not open the stored secrets (X1)."""


class KeyRefused(SecretKeyError):
    """Issue 18 item 7: this process's key is not the store's (or it has none): the store
    refuses it before anything is written."""

    exit_code = EXIT_REFUSED


class BackendError(IacctlError):
    """The pool's backend (the Kubernetes API) failed or could not be reached."""


class BackendRefused(BackendError):
    """The cluster refuses what the pool needs (a namespace that does not exist, RBAC, a quota,
    an admission rule, an image that cannot be pulled): waiting would not help, so nothing
    waits for it (issue 10 item 6). The message names the cause and the fix."""
