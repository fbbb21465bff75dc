"""Running a task's stages (SPEC L2, E1-E9) in its slot, with real Terraform, through a Runtime.

`TaskRun.plan()` runs the plan stages and ends the task apply_pending, planned_and_finished,
failed or cancelled; `TaskRun.apply()` runs the apply stages of a confirmed task. Every way out
of a stage that is not success goes through `termination.end_task()` (E2, one path for failure
and cancel).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iacctl.domain.diagnostics import terraform_diagnostic
from iacctl.domain.drift import DriftedResource, parse_resource_drift
from iacctl.domain.lifecycle import SPECULATIVE, Stage, Status, TaskKind
from iacctl.domain.plans import count_changes, count_moves
from iacctl.errors import BackendError, IacctlError, TaskFailed, TerraformError, WorkspaceLocked
from iacctl.executor import terraform as tf
from iacctl.executor.progress import Reporter
from iacctl.executor.snapshot import archive_directory, store_snapshot
from iacctl.executor.tasklog import TaskLog
from iacctl.executor.termination import Cancelled, add_state_version, end_task, keep_applied_state
from iacctl.executor.watch import CancelWatch
from iacctl.filelock import exclusive
from iacctl.runtimes.base import (
    CommandInDoubt,
    CommandResult,
    PodGone,
    Runtime,
    RuntimeError_,
    SlotPlace,
    disk_error,
)
from iacctl.store import repo
from iacctl.store.db import Store
from iacctl.store.models import ConfigSnapshot, PlanArtifact, StateVersion, Task, Workspace

StageHook = Callable[["TaskRun"], None]


@dataclass
class StageHooks:
    """Work plugged into a stage. The run-task stages (pre_plan, post_plan, pre_apply,
    post_apply, SPEC R7) run only when something is attached to them."""

    by_stage: dict[Stage, list[StageHook]] = field(default_factory=dict)

    def for_stage(self, stage: Stage) -> list[StageHook]:
        return self.by_stage.get(stage, [])


class TaskRun:
    def __init__(
        self,
        store: Store,
        runtime: Runtime,
        task_id: int,
        reporter: Reporter,
        hooks: StageHooks | None = None,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.task_id = task_id
        self.reporter = reporter
        self.hooks = hooks or StageHooks()
        self.watch = CancelWatch(store, task_id)
        self.stage: Stage | None = None
        self._state_error = ""
        self.drifted: list[DriftedResource] = []  # F5: what the plan's refresh found changed outside
        with store.read() as session:
            self.task: Task = repo.get_task(session, task_id)
            self.workspace: Workspace = repo.workspace_by_id(session, self.task.workspace_id)
            self.place = repo.slot_place(session, self.task.slot_id)
            variables = repo.variables_of(session, self.workspace.id or 0)
            # X2, issue 24 item 4: the values the variables hold now and every secret they held.
            secrets = repo.values_to_mask(session, store.cipher, self.workspace.id or 0)
        cipher = store.cipher
        self.terraform_vars: dict[str, str] = {}
        self.env_vars: dict[str, str] = {}
        for var in variables:
            value = cipher.decrypt_text(var.value_secret) if var.value_secret else (var.value or "")
            (self.env_vars if var.category == "env" else self.terraform_vars)[var.key] = value
        self.log = TaskLog(store, task_id, reporter, secrets)
        self.watch.log = self.log
        self._binary: str | None = None
        # Issue 10 item 2: until a Terraform command was asked to start, a gone pod costs the
        # task nothing but its place: it is placed again instead of failed.
        self._terraform_started = False

    # -- the two entry points ------------------------------------------------------------------

    def plan(self) -> Status:
        return self._guarded(self._plan_stages)

    def apply(self, *, rebuild: bool = False) -> Status:
        return self._guarded(lambda: self._apply_stages(rebuild=rebuild))

    def _guarded(self, body: Callable[[], Status]) -> Status:
        self.watch.start()
        try:
            return body()
        except Cancelled as exc:
            with contextlib.suppress(Exception):
                self.watch.record_interrupt()
            return self._end(Status.CANCELLED, str(exc) or "cancelled")
        except PodGone as exc:
            return self._pod_lost(str(exc))
        except CommandInDoubt as exc:
            return self._in_doubt(str(exc))
        except IacctlError as exc:
            return self._end(Status.FAILED, str(exc))
        except OSError as exc:
            # Issue 13 item 7: a file-system fault names its cause and path, not "internal error".
            # Issue 19 item 6: a fault with no file named says so, never "using ?".
            what = disk_error(exc, "using", exc.filename) if exc.filename else f"failed: {exc.strerror or exc}"
            return self._end(Status.FAILED, f"at stage {self.stage}: {what}")
        except Exception as exc:
            return self._end(Status.FAILED, f"internal error at stage {self.stage}: {exc!r}")
        finally:
            self.watch.stop()
            with contextlib.suppress(Exception):
                self.log.flush(quiet=True)

    def _pod_lost(self, what: str) -> Status:
        """S5: the task's pod disappeared while it ran. It is marked lost at once, so that no
        task is placed on it again (issue 10 item 2). Before any Terraform command started, the
        task is placed again (a plan waits for another slot; a confirmed apply, whose plan
        context went with the pod, is planned again). Otherwise it fails with a clear message;
        if it was applying, the workspace stays locked with the reason, for an operator."""
        if self.place is not None:
            with contextlib.suppress(Exception), self.store.write() as session:
                repo.mark_pod_lost(session, self.place.pool, self.place.pod)
        if not self._terraform_started:
            placed = self._place_again(what)
            if placed is not None:
                return placed
        message = f"{what} at stage {self.stage}; the work directory went with it"
        keep: str | None = None
        if self.stage in (Stage.APPLYING, Stage.SAVING_STATE, Stage.POST_APPLY):
            keep = (f"task {self.task_id}'s pod was lost during {self.stage}: the infrastructure may be "
                    f"partly changed and its state was not stored; inspect it, then run: "
                    f"iacctl workspace unlock {self.workspace.name}")
            message += "; the workspace stays locked until an operator unlocks it"
        return end_task(self.store, self.runtime, self.task_id, Status.FAILED, message, log=self.log,
                        place=self.place, keep_lock_reason=keep)

    def _place_again(self, what: str) -> Status | None:
        """Back to pending, its slot freed (and the lock, which a re-plan takes again): nothing
        of the task ran in the gone pod. None if the task changed meanwhile."""
        replan = self.task.confirmed_at is not None
        reason = (f"{what} before Terraform started (stage {self.stage}); "
                  + ("the plan context went with it: planning again" if replan else "placed again on another slot"))
        fields: dict[str, Any] = {}
        if replan:
            # S5: the apply never started; its plan went with the pod and needs a new confirmation.
            # The confirming command waits for the new plan: it is the task's creator now, so the
            # queue leaves the task to it.
            fields = {"confirmed_at": None, "plan_hash": None, "planned_at": None, "plan_slot_id": None,
                      "replans": self.task.replans + 1, "creator_host": self.task.runner_host,
                      "creator_pid": self.task.runner_pid, "creator_start": self.task.runner_start,
                      **repo.WARMUP_CLEARED}
        with contextlib.suppress(Exception):
            self.log.note(reason)
            self.log.flush(quiet=True)
        try:
            with self.store.write() as session:
                repo.transition(session, self.task_id, Status.RUNNING, Status.PENDING, reason,
                                slot_id=None, pod_id=None, started_at=None, stage=None, error=None,
                                runner_host=None, runner_pid=None, runner_start=None, child_pid=None, **fields)
        except IacctlError:
            return None
        return Status.PENDING

    def _in_doubt(self, what: str) -> Status:
        """Issue 10 item 1: a command of the task may be running and nobody can tell. Nothing is
        concluded: the task stays running, the workspace locked and the work directory where it
        is; the sweep settles the task from the command's files once the pod answers."""
        note = (f"{what}; task {self.task_id} stays running at stage {self.stage} and nothing is removed; "
                "once the pod answers, `iacctl pods recover` settles it from the command's files")
        with contextlib.suppress(Exception):
            self.log.note(note)
            self.log.flush(quiet=True)
        with contextlib.suppress(Exception), self.store.write() as session:
            repo.set_lock_reason(session, self.workspace.id or 0, self.task_id,
                                 f"task {self.task_id}'s command in its pod could not be confirmed: {what}")
        raise BackendError(f"task {self.task_id}: {note}")

    def _end(self, outcome: Status, error: str) -> Status:
        return end_task(
            self.store, self.runtime, self.task_id, outcome, error, log=self.log, place=self.place
        )

    # -- plan ----------------------------------------------------------------------------------

    def _plan_stages(self) -> Status:
        self._enter(Stage.FETCHING)
        self._fetch()
        self._checkpoint()
        self._enter(Stage.INIT)
        self._init()
        self._run_hooks(Stage.PRE_PLAN)
        self._checkpoint()
        self._enter(Stage.PLANNING)
        drift_check = self.task.kind == TaskKind.DRIFT_CHECK
        result = self._terraform(tf.plan_args(self.binary, color=self._color, refresh_only=drift_check),
                                 "terraform plan -refresh-only" if drift_check else "terraform plan", ok_codes=(0, 2))
        self._checkpoint()
        with self._critical(Stage.SAVING_PLAN):
            has_changes = self._save_plan(result.exit_code == 2)
        self._checkpoint()
        self._run_hooks(Stage.POST_PLAN)
        self._checkpoint()
        return self._finish_plan(has_changes)

    def _fetch(self) -> None:
        cipher = self.store.cipher
        with self.store.write() as session:
            # Issue 18 item 1: the configuration the task was created with (stored by the command
            # that queued it), whichever machine plans or re-plans it; this machine's checkout
            # of the directory is read only for a task that has none (queued by an older iacctl).
            snapshot = (session.get(ConfigSnapshot, self.task.config_snapshot_id)
                        if self.task.config_snapshot_id else None)
            stored = snapshot is not None
            if snapshot is None:
                data, digest = archive_directory(Path(self.workspace.source_dir))
                snapshot = store_snapshot(session, cipher, self.workspace.id or 0, data, digest)
            else:
                data, digest = cipher.decrypt(snapshot.data_secret), snapshot.sha256
            base = repo.latest_state_version(session, self.workspace.id or 0)
            repo.update_task(
                session, self.task_id, config_snapshot_id=snapshot.id,
                base_state_version_id=base.id if base else None,
            )
        if stored:
            again = " (planning again)" if self.task.replans else ""
            self.log.note(f"config snapshot {digest[:12]} ({len(data)} bytes) stored when task {self.task_id} was "
                          f"created{again}; this machine's checkout of {self.workspace.source_dir} is not read")
        else:
            self.log.note(f"config snapshot {digest[:12]} ({len(data)} bytes) of {self.workspace.source_dir}")
        self._prepare_work_dir(data, base)

    def _prepare_work_dir(self, config_tar: bytes, base: StateVersion | None) -> None:
        place = self._place()
        try:
            # S7, issue 10 item 2: a pod being deleted (Terminating) still runs commands for its
            # grace period but is lost; a task is never prepared there.
            if not self.runtime.pod_alive(place.pod):
                raise PodGone(f"pod {place.pod} is gone (deleted, evicted or failed)")
            self.runtime.reset_work_dir(place)
            self.runtime.extract_archive(place, config_tar)
            self.runtime.write_file(place, tf.BACKEND_OVERRIDE_FILE, tf.BACKEND_OVERRIDE)
            if base is not None:
                self.runtime.write_file(place, tf.STATE_FILE, self.store.cipher.decrypt(base.data_secret))
        except PodGone:
            raise
        except RuntimeError_ as exc:
            raise TaskFailed(str(exc)) from None
        if base is not None:
            self.log.note(f"state version {base.id} (serial {base.serial}) written into {place}")
        else:
            self.log.note(f"no state yet; work directory {place} prepared")

    def _save_plan(self, exit_says_changes: bool) -> bool:
        place = self._place()
        plan_bytes = self.runtime.read_file(place, tf.PLAN_FILE)
        if plan_bytes is None:
            raise TaskFailed("terraform plan left no plan file")
        plan_hash = hashlib.sha256(plan_bytes).hexdigest()
        lines: list[str] = []
        shown = self._run(tf.show_json_args(self.binary), lines.append, stoppable=False)
        if shown.exit_code != 0:
            raise TerraformError(f"terraform show -json failed (exit {shown.exit_code})")
        plan_json = _parse_json_output(lines)
        counts = count_changes(plan_json)
        self.drifted = parse_resource_drift(plan_json)
        has_changes = exit_says_changes
        cipher = self.store.cipher
        with self.store.write() as session:
            repo.replace_plan_artifact(
                session,
                PlanArtifact(
                    task_id=self.task_id, plan_hash=plan_hash, created_at=repo.now(),
                    plan_secret=cipher.encrypt(plan_bytes),
                    plan_json_secret=cipher.encrypt(zlib.compress(json.dumps(plan_json).encode())),
                ),
            )
            repo.update_task(
                session, self.task_id, plan_hash=plan_hash, planned_at=repo.now(),
                has_changes=has_changes, add_count=counts.add, change_count=counts.change,
                destroy_count=counts.destroy, replace_count=counts.replace, output_count=counts.outputs,
                move_count=count_moves(plan_json),
            )
        self.log.note(f"plan saved: {counts.summary()}; plan_hash {plan_hash[:16]}")
        return has_changes

    def _finish_plan(self, has_changes: bool) -> Status:
        speculative = self.task.kind in SPECULATIVE
        if speculative or not has_changes:
            drift_check = self.task.kind == TaskKind.DRIFT_CHECK
            with self.store.write() as session:
                repo.transition(
                    session, self.task_id, Status.RUNNING, Status.PLANNED_AND_FINISHED,
                    (f"drift check finished: {len(self.drifted)} drifted resource(s)" if drift_check
                     else "speculative plan finished" if speculative else "no changes"),
                )
                if drift_check:
                    # F1, F5: the drift record and its notification in the task's final transaction.
                    repo.record_drift(session, self.workspace.id or 0, self.task_id, self.drifted, repo.now())
            if self.task.kind == TaskKind.DRIFT_CHECK:
                self.log.note("drift: " + ("; ".join(r.said() for r in self.drifted) or "none"))
            self.runtime.remove_work_dir(self._place())
            self.log.flush()
            return Status.PLANNED_AND_FINISHED
        try:
            with self.store.write() as session:
                # L5 / H7: a task is never apply_pending without holding the lock; S2: its slot
                # stays reserved with the plan's work directory (E6 fast path). Both are effects
                # of this change (domain.policy).
                repo.transition(
                    session, self.task_id, Status.RUNNING, Status.APPLY_PENDING,
                    "plan has changes; waiting for confirm-apply",
                )
        except WorkspaceLocked as exc:
            raise TaskFailed(str(exc)) from None
        self.log.note(f"task {self.task_id} waits for confirmation: iacctl confirm-apply {self.task_id}")
        self.log.flush()
        return Status.APPLY_PENDING

    # -- apply ---------------------------------------------------------------------------------

    def _apply_stages(self, *, rebuild: bool) -> Status:
        place = self._place()
        reason = self._fast_path_refusal(place, rebuild)
        if reason is None and self._warmed():
            self.log.note(
                f"the warm-up slot {place} is ready (init done, plan restored, plan_hash "
                f"{(self.task.plan_hash or '')[:16]} verified); init and plan restore skipped"
            )
            path = "warmed"
        elif reason is None:
            self.log.note(
                f"same work directory as the plan ({place}, plan file matches plan_hash "
                f"{(self.task.plan_hash or '')[:16]}); init and plan restore skipped"
            )
            path = "same_slot"
        else:
            self.log.note(f"rebuilding the work directory from the store: {reason}")
            self._rebuild(place)
            path = "rebuilt"
        with self.store.write() as session:
            repo.update_task(session, self.task_id, apply_path=path)
        self._run_hooks(Stage.PRE_APPLY)
        self._checkpoint()
        with self._critical(Stage.APPLYING):
            result = self._run(tf.apply_args(self.binary, color=self._color), self.log.terraform_line,
                               stoppable=True)
        if result.exit_code != 0:
            if result.interrupted:
                raise Cancelled("cancelled during applying; Terraform stopped gracefully")
            raise TerraformError(self._failure("terraform apply", result.exit_code))
        # E1: the apply finished; a cancel arriving now cannot undo it, so it is not acted on.
        with self._critical(Stage.SAVING_STATE):
            version_id = self._save_state()
        if version_id is None:
            return keep_applied_state(
                self.store, self.runtime, self.task_id, self._place(), self.log,
                self.store.settings.work_root, self._state_error,
            )
        self._run_hooks(Stage.POST_APPLY, may_fail=False)
        with self.store.write() as session:
            repo.transition(
                session, self.task_id, Status.RUNNING, Status.APPLIED, "apply finished",
                state_version_id=version_id,
            )
        self.runtime.remove_work_dir(place)
        self.log.flush()
        return Status.APPLIED

    def _fast_path_refusal(self, place: SlotPlace, rebuild: bool) -> str | None:
        if rebuild:
            return "--rebuild was given"
        if self.task.plan_slot_id is not None and self.task.plan_slot_id != self.task.slot_id and not self._warmed():
            with self.store.read() as session:
                planned_on = repo.machine_of_slot(session, self.task.plan_slot_id)
                applies_on = repo.machine_of_slot(session, self.task.slot_id)
            if planned_on != applies_on:
                # Issue 18 item 2: confirmed on another machine than the one that planned.
                return f"the plan was made on machine {planned_on} and the apply runs on machine {applies_on}"
            return "the apply runs in another slot than the plan"
        plan_bytes = self.runtime.read_file(place, tf.PLAN_FILE)
        if plan_bytes is None:
            return f"the slot {place} has no plan file"
        if hashlib.sha256(plan_bytes).hexdigest() != self.task.plan_hash:
            return f"the plan file in {place} does not match plan_hash"
        return None

    def _warmed(self) -> bool:
        """S6: the slot was prepared from the store (init, plan restored, hash verified)."""
        return self.task.warmup_status == "ready" and self.task.warmup_slot_id == self.task.slot_id

    def warm_up(self) -> str | None:
        """S6: prepare the task's (new) slot from the store while it waits for confirmation:
        work directory, init, plan restored and its hash verified. Returns why it failed, or
        None. The task's status is not changed: a failed warm-up falls back to re-planning."""
        try:
            place = self._place()
            self.log.note(f"warm-up: preparing slot {place} from the store")
            self._rebuild(place)
            return None
        except (IacctlError, RuntimeError_, Cancelled) as exc:
            with contextlib.suppress(Exception):
                self.log.note(f"warm-up failed: {exc}")
            return str(exc)
        finally:
            with contextlib.suppress(Exception):
                self.log.flush(quiet=True)

    def _rebuild(self, place: SlotPlace) -> None:
        cipher = self.store.cipher
        with self.store.read() as session:
            snapshot = session.get(ConfigSnapshot, self.task.config_snapshot_id)
            base_id = self.task.base_state_version_id
            base = session.get(StateVersion, base_id) if base_id else None
            artifact = repo.plan_artifact_of(session, self.task_id)
        if snapshot is None or artifact is None:
            raise TaskFailed("the plan's config snapshot or plan file is missing from the store")
        self._enter(Stage.INIT)
        self._prepare_work_dir(cipher.decrypt(snapshot.data_secret), base)
        self._init()
        self._checkpoint()
        self._enter(Stage.RESTORING_PLAN)
        plan_bytes = cipher.decrypt(artifact.plan_secret)
        self.runtime.write_file(place, tf.PLAN_FILE, plan_bytes)
        restored = self.runtime.read_file(place, tf.PLAN_FILE) or b""
        digest = hashlib.sha256(restored).hexdigest()
        if digest != self.task.plan_hash:
            raise TaskFailed(
                f"the restored plan's hash {digest[:16]} does not match plan_hash {(self.task.plan_hash or '')[:16]}"
            )
        self.log.note(f"plan restored and verified (sha256 {digest[:16]})")
        self._checkpoint()

    def _save_state(self) -> int | None:
        self._state_error = ""
        try:
            data = self.runtime.read_file(self._place(), tf.STATE_FILE)
        except PodGone:
            raise
        except RuntimeError_ as exc:
            self._state_error = f"the state file could not be read: {exc}"
            return None
        if data is None:
            self._state_error = "terraform apply left no state file"
            return None
        try:
            with self.store.write() as session:
                version = add_state_version(session, self.store, self.workspace.id or 0, self.task_id, data,
                                            partial=False)
                version_id, serial = version.id, version.serial
        except Exception as exc:
            self._state_error = f"the new state could not be stored: {exc}"
            return None
        self.log.note(f"state version {version_id} stored (serial {serial})")
        return version_id

    # -- shared pieces --------------------------------------------------------------------------

    @property
    def binary(self) -> str:
        if self._binary is None:
            self._binary = tf.find_binary(self.workspace.terraform_bin, self.workspace.terraform_version,
                                          self.log.note)
        return self._binary

    def _place(self) -> SlotPlace:
        if self.place is None:
            raise TaskFailed("the task holds no slot")
        return self.place

    def _enter(self, stage: Stage, note: str | None = None) -> None:
        self.stage = stage
        with self.store.write() as session:
            repo.set_stage(session, self.task_id, stage, note)
        self.log.flush(quiet=True)
        self.reporter.stage(self.task_id, stage)

    @contextlib.contextmanager
    def _critical(self, stage: Stage) -> Iterator[None]:
        """E1: a critical section is always left, on success, error and cancel; a cancel that
        arrives inside it is acted on by the caller's next checkpoint, after the section."""
        self._enter(stage)
        yield

    def _checkpoint(self) -> None:
        if self.watch.requested():
            raise Cancelled(f"cancelled at stage {self.stage}")

    def _run_hooks(self, stage: Stage, *, may_fail: bool = True) -> None:
        hooks = self.hooks.for_stage(stage)
        if not hooks:
            return
        self._enter(stage)
        for hook in hooks:
            try:
                hook(self)
            except IacctlError as exc:
                if may_fail:
                    raise
                # R7: a failure after the apply only warns; the apply is not rolled back.
                self.log.note(f"warning at {stage}: {exc}")

    def _run(self, argv: list[str], on_line: Callable[[str], None], *, stoppable: bool) -> CommandResult:
        env = tf.environment(self.terraform_vars, self.env_vars,
                             self.runtime.plugin_cache(self.place) if self.place is not None else None)
        self.log.recent.clear()

        def started(pid: int) -> None:
            with self.store.write() as session:
                repo.update_task(session, self.task_id, child_pid=pid)

        place = self._place()
        self._terraform_started = True
        try:
            return self.runtime.run(
                place, argv, env, on_line,
                self.watch.requested if stoppable else (lambda: False), started,
            )
        except (PodGone, CommandInDoubt):
            raise
        except RuntimeError_ as exc:
            raise TerraformError(str(exc)) from None
        finally:
            self.log.end_output()

    def _init(self) -> None:
        """`terraform init`, one at a time per plugin cache on this machine: Terraform's plugin
        cache is not safe for concurrent use (two inits installing the same provider at once fail
        with "failed to create directory ... plugin-cache/..."). iacctl's own cache is per slot
        (Runtime.plugin_cache), so this only matters for a TF_PLUGIN_CACHE_DIR the user shares."""
        cache = self._local_plugin_cache()
        if cache is None:
            self._terraform(tf.init_args(self.binary, color=self._color), "terraform init")
            return
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError:
            cache = None
        with exclusive(cache / ".iacctl-init.lock") if cache is not None else contextlib.nullcontext():
            self._terraform(tf.init_args(self.binary, color=self._color), "terraform init")

    def _local_plugin_cache(self) -> Path | None:
        """The plugin cache Terraform uses for this task on this machine: the user's
        TF_PLUGIN_CACHE_DIR, else the slot's; None where Terraform runs elsewhere (a pod has its
        own)."""
        if self.place is None:
            return None
        own = self.runtime.plugin_cache(self.place)
        if own is None:
            return None
        chosen = self.env_vars.get("TF_PLUGIN_CACHE_DIR") or os.environ.get("TF_PLUGIN_CACHE_DIR")
        return Path(chosen) if chosen else own

    def _terraform(self, argv: list[str], what: str, ok_codes: tuple[int, ...] = (0,)) -> CommandResult:
        result = self._run(argv, self.log.terraform_line, stoppable=True)
        if result.interrupted:
            raise Cancelled(f"cancelled during {self.stage}; Terraform stopped")
        if result.exit_code not in ok_codes:
            raise TerraformError(self._failure(what, result.exit_code))
        return result

    def _failure(self, what: str, exit_code: int) -> str:
        """Issue 9: a Terraform failure carries Terraform's own reason (its first Error:
        diagnostic, already redacted), not only the exit code."""
        reason = terraform_diagnostic(list(self.log.recent))
        return f"{what} failed (exit {exit_code})" + (f": {reason}" if reason else "")

    @property
    def _color(self) -> bool:
        return bool(getattr(self.reporter, "color", False))


def _parse_json_output(lines: list[str]) -> dict[str, Any]:
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    raise TaskFailed("terraform show -json printed no plan JSON")
