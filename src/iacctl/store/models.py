"""SQLModel tables of the store (SPEC section 2 words). Times are UTC epoch seconds (float), so
SQLite and PostgreSQL compare them the same way. Columns named `*_secret` hold AES-256-GCM
blobs (X1); nothing else in the store is secret.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

# Issue 19 item 3: on SQLite an id is never given again after its row is deleted (AUTOINCREMENT;
# without it SQLite reuses the largest rowid), so nothing keyed to a deleted record (a task's
# run_id, a destination's nc-N, an outbox entry) lands on a new one. PostgreSQL's sequences never
# reuse ids. Tables whose ids nobody sees or keeps (task events and log lines) do without.
# Migration 0010 rebuilds the tables of existing SQLite stores with it, keeping their ids.
AUTOINCREMENT = {"sqlite_autoincrement": True}
AUTOINCREMENT_TABLES = (
    "pools",
    "freeze_windows",
    "pods",
    "slots",
    "workspaces",
    "variables",
    "tasks",
    "state_versions",
    "config_snapshots",
    "plan_artifacts",
    "run_tasks",
    "workspace_run_tasks",
    "task_results",
    "runtask_servers",
    "notification_destinations",
    "outbox",
    "deliveries",
    "run_triggers",
    "inventory_resources",
    "inventory_syncs",
    "inventory_endpoints",
)


class Pool(SQLModel, table=True):
    __tablename__ = "pools"
    __table_args__ = AUTOINCREMENT
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=90)
    backend: str = Field(default="local", max_length=20)  # S1: local | kubernetes
    slots_per_pod: int = 3
    min_pods: int = 1
    max_pods: int = 1
    scale_down_delay_s: float = 900.0
    plan_lifetime_s: float = 86400.0  # M7: plans expire after 24 h by default
    warmup_lifetime_s: float = 1800.0
    warmup_retry_limit: int = 3
    on_lost_context: str = Field(default="replan", max_length=20)
    work_root: str | None = None
    spec_json: str | None = None  # backend-specific settings (namespace, image, context ...)
    created_at: float
    frozen_until: float | None = None  # S4: end of the freeze window whose start was acted on


class FreezeWindow(SQLModel, table=True):
    """S4: while now is in [starts_at, ends_at) no task starts in the pool and it has no pods."""

    __tablename__ = "freeze_windows"
    __table_args__ = AUTOINCREMENT
    id: int | None = Field(default=None, primary_key=True)
    pool_id: int = Field(foreign_key="pools.id", index=True)
    starts_at: float
    ends_at: float
    reason: str | None = None
    created_at: float


class Pod(SQLModel, table=True):
    __tablename__ = "pods"
    __table_args__ = (UniqueConstraint("pool_id", "name"), AUTOINCREMENT)
    id: int | None = Field(default=None, primary_key=True)
    pool_id: int = Field(foreign_key="pools.id", index=True)
    name: str = Field(max_length=253)
    status: str = Field(default="ready", max_length=20)
    created_at: float
    idle_since: float | None = None
    # Issue 18 item 4: a pod of the local pool is one machine (runtimes.local.machine()), beating
    # its heartbeat while that machine's commands and runners are alive, with its own slot count
    # (None: the pool's). Kubernetes pods have none of these.
    machine: str | None = Field(default=None, max_length=253)
    heartbeat_at: float | None = None
    slots_per_pod: int | None = None


class Slot(SQLModel, table=True):
    __tablename__ = "slots"
    __table_args__ = (UniqueConstraint("pod_id", "slot_index"), Index("ix_slots_state", "state"), AUTOINCREMENT)
    id: int | None = Field(default=None, primary_key=True)
    pod_id: int = Field(foreign_key="pods.id", index=True)
    slot_index: int
    state: str = Field(default="idle", max_length=20)
    task_id: int | None = None
    updated_at: float


class Workspace(SQLModel, table=True):
    __tablename__ = "workspaces"
    __table_args__ = AUTOINCREMENT
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=90)
    source_dir: str
    pool_id: int = Field(foreign_key="pools.id")
    terraform_bin: str | None = None
    terraform_version: str | None = None  # E10: downloaded, verified and cached by iacctl
    plan_lifetime_s: float | None = None  # overrides the pool's
    # L5: the lock. Held by a task (locked_by_task_id) or by an operator (lock_holder only).
    locked_by_task_id: int | None = None
    lock_holder: str | None = None
    lock_reason: str | None = None
    locked_at: float | None = None
    created_at: float


class Variable(SQLModel, table=True):
    __tablename__ = "variables"
    __table_args__ = (UniqueConstraint("workspace_id", "category", "key"), AUTOINCREMENT)
    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspaces.id", index=True)
    key: str = Field(max_length=128)
    category: str = Field(default="terraform", max_length=20)  # terraform | env
    sensitive: bool = False
    hcl: bool = False
    value: str | None = None  # plain values only
    value_secret: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    updated_at: float


class FormerSecret(SQLModel, table=True):
    """Issue 24 item 4 (X2): a value a sensitive variable held before it was replaced, unset or
    made plain, kept encrypted for as long as its workspace, so that a plan or a log showing it
    (Terraform does not always carry the sensitive mark over, e.g. terraform_data's output)
    masks it. Never shown. Its ids are seen by nobody: no AUTOINCREMENT (see above)."""

    __tablename__ = "former_secrets"
    __table_args__ = (Index("ix_former_secrets_variable", "workspace_id", "category", "key"),)
    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspaces.id")
    key: str = Field(max_length=128)
    category: str = Field(default="terraform", max_length=20)  # terraform | env
    value_secret: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    replaced_at: float


class Task(SQLModel, table=True):
    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_workspace_status", "workspace_id", "status"), AUTOINCREMENT)
    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspaces.id")
    kind: str = Field(max_length=20)
    status: str = Field(default="pending", max_length=30, index=True)
    stage: str | None = Field(default=None, max_length=30)
    error: str | None = None
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    # Who waits for it (a pending task whose creator is gone before it started is cancelled,
    # issue 13; one without a creator, --no-wait, is started by whoever frees its turn) ...
    creator_host: str | None = None
    creator_pid: int | None = None
    creator_start: float | None = None
    # ... and who runs it (E3: the sweep finds tasks whose runner is gone).
    runner_host: str | None = None
    runner_pid: int | None = None
    runner_start: float | None = None
    child_pid: int | None = None
    heartbeat_at: float | None = None
    cancel_requested_at: float | None = None
    confirmed_at: float | None = None
    # Issue 9: who created, confirmed and cancelled it, and what they said (--message): JSON of
    # domain.actors.Actor (local user and host, the CI system's identity and run).
    created_by: str | None = None
    confirmed_by: str | None = None
    cancelled_by: str | None = None
    pool_id: int | None = None
    pod_id: int | None = None
    slot_id: int | None = None
    plan_slot_id: int | None = None  # E6: where the plan's work directory was made
    config_snapshot_id: int | None = None
    base_state_version_id: int | None = None  # L6: the state the plan was made from
    plan_hash: str | None = None
    planned_at: float | None = None
    has_changes: bool | None = None
    add_count: int | None = None
    change_count: int | None = None
    destroy_count: int | None = None
    replace_count: int | None = None
    output_count: int | None = None
    move_count: int | None = None  # issue 19 item 7: resources the plan moves (moved blocks)
    apply_path: str | None = None  # E6: same_slot | rebuilt
    state_version_id: int | None = None
    replans: int = 0
    # S6: a new slot prepared from the store for an apply_pending task whose plan context is lost.
    warmup_status: str | None = Field(default=None, max_length=20)  # warming | ready | expired | failed
    warmup_slot_id: int | None = None
    warmup_at: float | None = None
    warmup_expires_at: float | None = None
    warmup_attempts: int = 0
    warmup_error: str | None = None
    # F4: the applies a triggered task follows (JSON list of domain.triggers.Source), and how far
    # down a chain of triggers it is (None: queued by hand).
    trigger_sources: str | None = None
    trigger_hops: int | None = None


class TaskEvent(SQLModel, table=True):
    """L7: every status and stage change, with time and reason."""

    __tablename__ = "task_events"
    id: int | None = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="tasks.id", index=True)
    at: float
    kind: str = Field(max_length=10)  # status | stage | note
    from_value: str | None = None
    to_value: str | None = None
    reason: str | None = None


class TaskLog(SQLModel, table=True):
    """E4: Terraform's output, line by line, encrypted (it can show state values)."""

    __tablename__ = "task_logs"
    __table_args__ = (Index("ix_task_logs_task_seq", "task_id", "seq"),)
    id: int | None = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="tasks.id")
    seq: int
    at: float
    line_secret: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class StateVersion(SQLModel, table=True):
    __tablename__ = "state_versions"
    __table_args__ = AUTOINCREMENT
    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspaces.id", index=True)
    serial: int
    sha256: str
    size: int
    partial: bool = False  # E2: saved from an apply that stopped part-way
    task_id: int | None = None
    created_at: float
    data_secret: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class ConfigSnapshot(SQLModel, table=True):
    """E7: the workspace's source directory as planned (tar.gz, encrypted)."""

    __tablename__ = "config_snapshots"
    __table_args__ = AUTOINCREMENT
    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspaces.id", index=True)
    sha256: str
    size: int
    created_at: float
    data_secret: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class PlanArtifact(SQLModel, table=True):
    """E5: the saved plan file and its JSON rendering, encrypted."""

    __tablename__ = "plan_artifacts"
    __table_args__ = AUTOINCREMENT
    id: int | None = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="tasks.id", unique=True)
    plan_hash: str
    created_at: float
    plan_secret: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    plan_json_secret: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class RunTask(SQLModel, table=True):
    """R1: an external HTTP service that passes or fails a stage (HCP Terraform run task)."""

    __tablename__ = "run_tasks"
    __table_args__ = AUTOINCREMENT
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=90)
    url: str
    description: str | None = None
    hmac_key_secret: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    timeout_s: float = 600.0  # R6: 10 min by default
    created_at: float
    updated_at: float


class WorkspaceRunTask(SQLModel, table=True):
    """R1: a run task attached to a workspace at a stage with an enforcement level."""

    __tablename__ = "workspace_run_tasks"
    __table_args__ = (UniqueConstraint("workspace_id", "run_task_id"), AUTOINCREMENT)
    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspaces.id", index=True)
    run_task_id: int = Field(foreign_key="run_tasks.id", index=True)
    stage: str = Field(max_length=20)  # pre_plan | post_plan | pre_apply | post_apply
    enforcement: str = Field(max_length=20)  # advisory | mandatory
    created_at: float


class TaskResult(SQLModel, table=True):
    """R2-R6: one call of a run task for one stage of one task, and what came back."""

    __tablename__ = "task_results"
    __table_args__ = (Index("ix_task_results_status", "status"), AUTOINCREMENT)
    id: int | None = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="tasks.id", index=True)
    run_task_id: int | None = None  # the run task may be deleted later; its name stays
    run_task_name: str = Field(max_length=90)
    stage: str = Field(max_length=20)
    enforcement: str = Field(max_length=20)
    status: str = Field(default="pending", max_length=20)
    message: str | None = None
    url: str | None = None
    outcomes_json: str | None = None
    access_token_secret: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    token_used: bool = False  # C5: set when the token is cleared (final callback or timeout)
    created_at: float
    updated_at: float
    deadline_at: float
    finished_at: float | None = None


class RunTaskServer(SQLModel, table=True):
    """R8: a live `iacctl runtask serve`: waiting tasks give services its public URL."""

    __tablename__ = "runtask_servers"
    __table_args__ = AUTOINCREMENT
    id: int | None = Field(default=None, primary_key=True)
    public_url: str
    listen: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float


class NotificationDestination(SQLModel, table=True):
    """F3: where notifications of chosen events go: one workspace's, or every workspace's when
    workspace_id is None. The token and a Slack URL are secrets (X1)."""

    __tablename__ = "notification_destinations"
    __table_args__ = AUTOINCREMENT
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=90)
    kind: str = Field(default="generic", max_length=20)  # generic | slack
    url: str | None = None  # a generic destination's URL; a Slack URL is in url_secret only
    url_secret: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    token_secret: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    events: str  # comma-separated event names (domain.notifications.Event)
    workspace_id: int | None = Field(default=None, foreign_key="workspaces.id", index=True)
    enabled: bool = True
    verified_at: float | None = None
    created_at: float
    updated_at: float


class OutboxEntry(SQLModel, table=True):
    """F1: a follow-up of a task, written in the transaction of the status change that caused
    it; `key` makes it unique, so it is never written twice. Delivered by a claim with a lease
    (status delivering, claim_token), marked delivered at most once."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_status_due", "status", "next_attempt_at"),
                      Index("ix_outbox_destination_status", "destination_id", "status"), AUTOINCREMENT)
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, max_length=200)
    kind: str = Field(default="notification", max_length=20)
    destination_id: int | None = None  # no foreign key: a deleted destination's entries stay readable
    destination_name: str | None = Field(default=None, max_length=90)
    task_id: int | None = Field(default=None, index=True)
    workspace_id: int | None = None
    event: str = Field(max_length=30)
    facts_json: str
    status: str = Field(default="pending", max_length=20)  # pending | delivering | delivered | dead | dismissed
    attempts: int = 0
    next_attempt_at: float
    give_up_at: float  # F1: retried until then, then dead
    claim_token: str | None = Field(default=None, max_length=40)
    lease_until: float | None = None
    claimed_by_host: str | None = None
    claimed_by_pid: int | None = None
    claimed_by_start: float | None = None
    last_error: str | None = None
    last_http_status: int | None = None
    delivered_at: float | None = None
    created_at: float
    updated_at: float


class Delivery(SQLModel, table=True):
    """F3, seed 002 M4: every attempt to deliver (and every verification request), kept: time,
    HTTP code, duration, error, the first 1 KB of the answer. Never a secret."""

    __tablename__ = "deliveries"
    __table_args__ = AUTOINCREMENT
    id: int | None = Field(default=None, primary_key=True)
    outbox_id: int | None = Field(default=None, index=True)
    destination_id: int | None = Field(default=None, index=True)
    destination_name: str = Field(max_length=90)
    event: str = Field(max_length=30)
    task_id: int | None = None
    attempt: int
    at: float
    duration_ms: float
    http_status: int | None = None
    error: str | None = None
    response_excerpt: str | None = None
    result: str = Field(max_length=20)  # delivered | retry | rejected | dead | abandoned | verified | dropped


class RunTrigger(SQLModel, table=True):
    """F4: an apply of the source workspace queues a plan of the follower."""

    __tablename__ = "run_triggers"
    __table_args__ = (UniqueConstraint("workspace_id", "source_workspace_id"), AUTOINCREMENT)
    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspaces.id", index=True)  # the follower
    source_workspace_id: int = Field(foreign_key="workspaces.id", index=True)
    only_if_changed: bool = False
    created_at: float
    created_by: str | None = None  # domain.actors.Actor JSON


class InventoryResource(SQLModel, table=True):
    """F2: one resource instance a workspace's state held, from when it was first seen until it
    was removed. Its `id` attribute is the only attribute value kept (X2)."""

    __tablename__ = "inventory_resources"
    __table_args__ = (UniqueConstraint("workspace_id", "address"), Index("ix_inventory_type", "type"), AUTOINCREMENT)
    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspaces.id", index=True)
    address: str
    module: str | None = None
    mode: str = Field(max_length=10)
    type: str
    name: str
    index_key: str | None = None
    provider: str | None = None
    # The resource's `id` is read from the state, which is encrypted at rest (X1): so is it.
    resource_id_secret: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    serial: int
    first_seen: float
    last_seen: float
    removed_at: float | None = None


class InventorySync(SQLModel, table=True):
    """F2, seed 002 H6: the inventory sync of a workspace. `syncing` is taken with a compare-and-set
    and records who took it and when, so that a sync left `syncing` by a killed process is reset
    by the sweep (its process is gone, or it is past the timeout) instead of blocking every
    later sync."""

    __tablename__ = "inventory_syncs"
    __table_args__ = AUTOINCREMENT
    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspaces.id", unique=True)
    status: str = Field(default="idle", max_length=20)  # idle | syncing
    synced_serial: int | None = None
    synced_at: float | None = None
    syncing_serial: int | None = None
    sync_started_at: float | None = None
    sync_host: str | None = None
    sync_pid: int | None = None
    sync_start: float | None = None
    last_error: str | None = None
    updated_at: float


class InventoryEndpoint(SQLModel, table=True):
    """F2: where each sync's records are also POSTed, signed as notifications are (F3). One row
    at most. The HMAC key is a secret (X1)."""

    __tablename__ = "inventory_endpoints"
    __table_args__ = AUTOINCREMENT
    id: int | None = Field(default=None, primary_key=True)
    url: str
    hmac_key_secret: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    created_at: float
    updated_at: float


class WorkspaceDrift(SQLModel, table=True):
    """F5: the last drift check of a workspace: which resources drifted and which of their
    attributes differ (names only, never values, X2), the check task whose saved plan shows it,
    and when an apply cleared it. One row per workspace, replaced by each check."""

    __tablename__ = "workspace_drift"
    workspace_id: int = Field(foreign_key="workspaces.id", primary_key=True)
    task_id: int  # the drift_check task; its plan is saved like any plan (iacctl tasks plan ID)
    checked_at: float
    resources_json: str = "[]"  # [domain.drift.DriftedResource.as_json()], sorted by address
    fingerprint: str | None = Field(default=None, max_length=64)  # None: nothing drifted
    cleared_at: float | None = None  # the next successful apply clears the drift it recorded
    cleared_by_task_id: int | None = None


class StoreMeta(SQLModel, table=True):
    """Facts about the store itself, by name. `key_check` (issue 18 item 7): a MAC under the
    store's secret key (crypto.key_check), never the key, so a process with another key (or none)
    is refused before it writes anything."""

    __tablename__ = "store_meta"
    name: str = Field(primary_key=True, max_length=64)
    value: str
