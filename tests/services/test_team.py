"""CI runners sharing one store (issue 18 items 1, 2, 4, 5): machines of the `team` fixture (Linux
namespaces with their own hostname, pids, machine id and work root, one PostgreSQL store, one
key) running the installed command. Any machine confirms exactly the saved plan, made from the
configuration the task was created with; each machine has its own running places; a waiting
command gets its own task's outcome whoever starts it."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from tests.background import Background
from tests.kube import NS, POOL, kube_pool


def _machine_name(m: Any) -> str:
    """The machine name iacctl gives `m` (hostname/fingerprint), as the pods list says it."""
    (pod,) = [p for p in m.ok("pods", "list", "--pool", "local", "--json").json() if p["this_machine"]]
    return str(pod["machine"])


def _other_checkout(m: Any, path: Path, region: str) -> None:
    """`m` sees another checkout at the same path (its own mount namespace), as two runners
    whose repositories are at different commits: the default region differs."""
    copy = path.parent / f"{path.name}-{m.name}"
    shutil.copytree(path, copy)
    main = copy / "main.tf"
    main.write_text(main.read_text().replace("eu-central-1", region))
    r = m.shell(f"mount --bind {copy} {path}")
    assert r.returncode == 0, r.stderr
    assert region in m.shell(f"cat {path}/main.tf").stdout


def _state_of(m: Any, workspace: str) -> dict[str, Any]:
    return json.loads(m.ok("state", "pull", workspace).out)  # type: ignore[no-any-return]


def test_confirm_on_another_machine_applies_the_reviewed_plan_not_its_checkout(team: Any) -> None:
    a, b = team.machine("ci-a"), team.machine("ci-b")
    src = a.workspace("net")
    _other_checkout(b, src, "us-east-1")
    a.ok("plan", "net", code=2)
    planned = a.task(1)
    assert planned["status"] == "apply_pending"

    r = b.ok("confirm-apply", "1")
    out = r.out + r.err
    name_a, name_b = _machine_name(a), _machine_name(b)
    assert f"planned on machine {name_a}, confirmed on machine {name_b}: rebuild" in out
    assert (f"rebuilding the work directory from the store: the plan was made on machine {name_a} and the apply "
            f"runs on machine {name_b}") in out
    assert f"plan restored and verified (sha256 {planned['plan_hash'][:16]})" in out
    task = b.task(1)
    assert task["status"] == "applied" and task["apply_path"] == "rebuilt"
    assert task["plan_hash"] == planned["plan_hash"] and task["replans"] == 0
    # What was reviewed (A's checkout) is what exists, not B's checkout.
    outputs = _state_of(b, "net")["outputs"]
    assert outputs["net"]["value"] == "net-eu-central-1"
    # The slot on A was given back: A's next plan of the workspace runs at once.
    assert a.ok("plan", "net", "--plan-only").code == 0


def test_a_replan_uses_the_configuration_the_task_was_created_with_and_rebuild_works_anywhere(team: Any) -> None:
    a, b = team.machine("ci-a"), team.machine("ci-b")
    src = a.workspace("net")
    _other_checkout(b, src, "us-east-1")
    a.ok("plan", "net", code=2)
    first_hash = a.task(1)["plan_hash"]
    # The checkout changes after the plan was queued, and A loses the plan's work directory.
    main = src / "main.tf"
    main.write_text(main.read_text().replace("eu-central-1", "ap-south-1"))
    shutil.rmtree(a.work_root / "local" / "local" / f"slot-{a.task(1)['slot']}")

    r = a.run("confirm-apply", "1")
    assert r.code == 4, r.out + r.err
    assert "the plan context is lost" in r.out + r.err
    assert "stored when task 1 was created (planning again); this machine's checkout" in r.out + r.err
    replanned = a.task(1)
    assert replanned["status"] == "apply_pending" and replanned["replans"] == 1
    # Same configuration, same state: the same plan (the changed checkout was not read).
    assert replanned["changes"] == {"add": 2, "change": 0, "destroy": 0, "replace": 0, "outputs": 1}

    r = b.ok("confirm-apply", "1", "--rebuild")
    assert "rebuilding the work directory from the store: --rebuild was given" in r.out
    assert b.task(1)["apply_path"] == "rebuilt"
    assert _state_of(b, "net")["outputs"]["net"]["value"] == "net-eu-central-1"
    assert first_hash  # the first plan was stored too


def test_each_machine_has_its_own_places_and_a_dead_machines_stop_counting(team: Any) -> None:
    a, b = team.machine("ci-a"), team.machine("ci-b")
    a.workspace("slow", "slow_apply")
    b.workspace("net")
    a.ok("pool", "set", "local", "--slots-per-pod", "1")
    pods = {p["machine"]: p for p in b.ok("pods", "list", "--json").json()}
    name_a, name_b = _machine_name(a), _machine_name(b)
    assert set(pods) == {name_a, name_b}
    assert pods[name_a]["places"] == 1 and pods[name_b]["places"] == 3
    assert "(this machine)" in b.ok("pods", "list").out

    # A's one running place is taken by a slow apply ...
    a.ok("plan", "slow", code=2)
    apply = Background(a.spawn("confirm-apply", "1"))
    try:
        a.wait_for(1, lambda t: t["stage"] == "applying")
        # ... which makes A's next plan wait, naming A's places, while B plans at once.
        r = a.run("plan", "net", "--plan-only", "--wait-timeout", "2s")
        assert r.code == 5, r.out + r.err
        assert f"all 1 running places of pool local are in use (task 1) on machine {name_a}" in r.out + r.err
        assert b.ok("plan", "net", code=2).code == 2

        # A dies mid-apply: its places count until its heartbeat times out, then for nobody.
        a.power_off()
        # (A beats at least every 5 s while it runs a task; the timeout is set low for the test.)
        short = {"IACCTL_HEARTBEAT_TIMEOUT": "12"}
        pods = {p["machine"]: p for p in b.ok("pods", "list", "--json", extra_env=short).json()}
        assert pods[name_a]["status"] == "ready" and pods[name_a]["places"] == 1
        time.sleep(12.5)
        pods = {p["machine"]: p for p in b.ok("pods", "list", "--json", extra_env=short).json()}
        assert pods[name_a]["status"] == "offline" and pods[name_a]["places"] == 0
        assert pods[name_b]["status"] == "ready" and pods[name_b]["places"] == 3
        assert f"{name_a}" in b.ok("pods", "list", extra_env=short).out
    finally:
        apply.proc.kill()
        apply.wait()


def _plans_from_two_machines(a: Any, b: Any, workspaces: list[str], per_machine: int) -> list[tuple[int, str]]:
    procs: list[Background] = []
    for i in range(per_machine):
        for m in (a, b):
            procs.append(Background(m.spawn("plan", workspaces[i % len(workspaces)], "--plan-only")))
    results = []
    for p in procs:
        code = p.wait(timeout=300)
        results.append((code, p.output))
    return results


def _assert_each_got_its_own_outcome(results: list[tuple[int, str]]) -> None:
    for code, output in results:
        # A speculative plan of a configuration with changes exits 2 (as terraform plan
        # -detailed-exitcode): never 0 after only its "waits:" line, never 5 "another process".
        assert code == 2, output
        assert "another process changed it" not in output
        assert "to add" in output


def test_concurrent_plans_from_two_machines_each_exit_with_their_own_tasks_code(team: Any) -> None:
    a, b = team.machine("ci-a"), team.machine("ci-b")
    for name in ("w1", "w2"):
        a.workspace(name)
    a.ok("pool", "set", "local", "--slots-per-pod", "1")
    b.ok("pool", "set", "local", "--slots-per-pod", "1")
    results = _plans_from_two_machines(a, b, ["w1", "w2"], per_machine=6)
    assert len(results) == 12
    _assert_each_got_its_own_outcome(results)
    statuses = [t["status"] for t in a.tasks()]
    assert statuses == ["planned_and_finished"] * 12


def test_a_kubernetes_pool_shared_by_two_machines(team: Any, fake_kube: Any) -> None:
    a, b = team.machine("ci-a"), team.machine("ci-b")
    kube_pool(a, fake_kube)
    b.vars["KUBECONFIG"] = str(fake_kube.kubeconfig)
    src = a.workspace("net", "simple", "--pool", POOL)
    _other_checkout(b, src, "us-east-1")
    a.ok("plan", "net", code=2)
    planned = a.task(1)
    assert planned["pool"] == POOL

    # Item 2: B confirms exactly A's plan, in the pod where it was made.
    b.ok("confirm-apply", "1")
    task = b.task(1)
    assert task["status"] == "applied" and task["plan_hash"] == planned["plan_hash"] and task["replans"] == 0
    assert _state_of(b, "net")["outputs"]["net"]["value"] == "net-eu-central-1"

    # Item 5: plans from both machines at once each get their own task's outcome.
    # (net is applied: its plans have no changes; these two have.)
    a.workspace("w2", "simple", "--pool", POOL)
    a.workspace("w3", "simple", "--pool", POOL)
    results = _plans_from_two_machines(a, b, ["w2", "w3"], per_machine=3)
    _assert_each_got_its_own_outcome(results)
    assert fake_kube.pods(NS)


def test_a_waiting_plan_follows_its_task_when_another_machine_starts_it(team: Any) -> None:
    """Item 5: if another machine starts the task anyway, the waiting command follows it through
    the store (its stages, its log) and exits with the task's own code."""
    a, b = team.machine("ci-a"), team.machine("ci-b")
    a.workspace("slow", "slow_apply")
    a.workspace("net")
    a.ok("pool", "set", "local", "--slots-per-pod", "1")
    a.ok("plan", "slow", code=2)
    apply = Background(a.spawn("confirm-apply", "1"))
    waiting = None
    try:
        a.wait_for(1, lambda t: t["stage"] == "applying")
        # A's one place is taken: A's plan of net waits for it ...
        waiting = Background(a.spawn("plan", "net"))
        waiting.wait_line("waits:")
        # ... and B, whose places are free, starts that task anyway (`tasks run`, as a runner
        # that takes queued work would).
        b.ok("tasks", "run", "2")
        code = waiting.wait(timeout=120)
    finally:
        for p in (apply, waiting):
            if p is not None and p.proc.poll() is None:
                p.proc.kill()
                p.wait()
    task = b.task(2)
    assert task["status"] == "apply_pending"
    assert code == 2, waiting.output
    assert "was started by another process on machine " + _machine_name(b) in waiting.output
    assert "terraform_data.net will be created" in waiting.output  # its log, followed
    assert "another process changed it" not in waiting.output
    assert "plan has changes" in waiting.output
