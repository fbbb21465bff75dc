"""The runtime interface: a slot's work directory and the commands run in it.

The executor only talks to this interface, never to a backend, so that a Kubernetes runtime
can take the local one's place (SPEC S7).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from iacctl.domain.slots import SlotPlace

__all__ = ["ClusterRefused", "CommandInDoubt", "CommandResult", "CommandState", "PodBackend", "PodGone", "PodInfo",
           "Runtime", "RuntimeError_", "SlotPlace", "disk_error"]


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    interrupted: bool  # we sent SIGINT because a stop was requested


class RuntimeError_(Exception):
    """A runtime could not do what was asked (no work directory, pod gone)."""


def disk_error(exc: OSError, doing: str, path: object) -> str:
    """One line for a file-system fault in a work directory (issue 13 item 4): the cause and
    the path, and what to do when the user can act on it."""
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on device while {doing} {path}; free space there, then plan again"
    if exc.errno == errno.EROFS:
        return f"the file system is read-only while {doing} {path}"
    return f"failed while {doing} {path}: {exc.strerror or exc}"


class PodGone(RuntimeError_):
    """S5/S7: the pod is gone from the API, failed or being deleted; its slots' work is lost."""


class ClusterRefused(RuntimeError_):
    """The cluster refuses what the pool asks, and asking again will not help (issue 10 item
    6): a namespace that does not exist, RBAC (403), a quota or an admission rule (403/422), an
    image that cannot be pulled. The message names the cause and the fix."""


class CommandInDoubt(RuntimeError_):
    """Issue 10 item 1: a command was asked to start but neither its start nor its absence could
    be confirmed (the pod could not be reached again). It may be running: nothing may be
    concluded from it, the task stays running and the workspace locked; the sweep settles it
    from the command's files once the pod answers."""


@dataclass(frozen=True)
class PodInfo:
    """A pod as the backend sees it."""

    name: str
    phase: str
    deleting: bool
    alive: bool
    # Issue 10 item 6: why a Pending pod's container cannot start and will not without a fix
    # (ErrImagePull, ImagePullBackOff, ...), with the kubelet's message; None otherwise.
    stuck: str | None = None


@dataclass(frozen=True)
class CommandState:
    """A slot's detached command as its files tell (Kubernetes runtime): still running, ended
    with an exit code, or nothing known; pod_gone when the pod itself is gone."""

    running: bool = False
    exit_code: int | None = None
    pod_gone: bool = False


class PodBackend(Protocol):
    """What scaling and the sweep need from a backend whose slots live in pods it creates and
    deletes (S3, S7, S8), and whose commands run detached there (their files say how they end)."""

    def list_pods(self) -> dict[str, PodInfo]: ...

    def create_pod(self, name: str) -> None: ...

    def wait_running(self, names: Sequence[str]) -> dict[str, PodInfo]:
        """Each pod as last seen: Running, lost, stuck (an image that cannot be pulled) or still
        Pending at the timeout; phase "Gone" when it is not in the API."""

    def delete_pod(self, name: str) -> None: ...

    def new_pod_name(self) -> str: ...

    def command_state(self, place: SlotPlace) -> CommandState: ...

    def stop_command(self, place: SlotPlace) -> None:
        """E1: SIGINT to the slot's command, wait, then kill what is left."""


class Runtime(Protocol):
    def work_dir_exists(self, place: SlotPlace) -> bool: ...

    def reset_work_dir(self, place: SlotPlace) -> None:
        """Make the slot's work directory exist and be empty."""

    def remove_work_dir(self, place: SlotPlace) -> None: ...

    def extract_archive(self, place: SlotPlace, tar_gz: bytes) -> None: ...

    def write_file(self, place: SlotPlace, relpath: str, data: bytes) -> None: ...

    def read_file(self, place: SlotPlace, relpath: str) -> bytes | None: ...

    def run(
        self,
        place: SlotPlace,
        argv: Sequence[str],
        env: Mapping[str, str],
        on_line: Callable[[str], None],
        should_stop: Callable[[], bool],
        on_start: Callable[[int], None],
    ) -> CommandResult:
        """Run a command in the slot's work directory, streaming its output line by line.
        When `should_stop()` turns true, interrupt it gracefully (SIGINT) and wait for it."""

    def pod_alive(self, pod: str) -> bool: ...

    def plugin_cache(self, place: SlotPlace) -> Path | None:
        """The Terraform plugin cache of the slot on this machine, where iacctl sets it for the
        Terraform it starts here; None where the runtime sets it itself (in a pod)."""

    def pod_backend(self) -> PodBackend | None:
        """The pods behind the slots, when the backend creates them (Kubernetes); None for
        this machine."""

    def keep_work_dir(self, place: SlotPlace, task_id: int) -> str | None:
        """Issue 13 item 6: move the slot's work directory (or what is left of it) aside for an
        operator, so the slot can be used again without losing it. Where it is now, or None."""

    def read_kept_file(self, pod: str, task_id: int, relpath: str) -> bytes | None:
        """A file of a kept work directory, or None if it (or the directory) is not there."""

    def remove_kept_dir(self, pod: str, task_id: int) -> None: ...
