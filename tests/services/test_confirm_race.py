"""Issue 18 item 6: no store error reaches the user. Ten `confirm-apply` of one waiting plan,
racing plans of the same workspace starting beside them (a start locks the workspace and the
pool, a confirmation the same rows: taken in two orders they deadlocked on PostgreSQL), give
exactly one apply and nine clean refusals, on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any

from tests.conftest import Env


def _clean(err: str) -> None:
    assert "store error" not in err and "deadlock" not in err, err
    assert "Traceback" not in err and "internal error" not in err, err


def test_ten_confirmations_racing_plans_give_one_apply_and_nine_refusals(any_env: Env) -> None:
    env = any_env
    env.workspace("net")
    env.ok("plan", "net", "--quiet", code=2)

    procs = []
    for i in range(10):
        procs.append(("confirm", env.spawn("confirm-apply", "1", "--quiet")))
        if i % 2 == 0:  # speculative plans of the same workspace start meanwhile (L4)
            procs.append(("plan", env.spawn("plan", "net", "--plan-only", "--quiet")))
    results = [(kind, p.wait(timeout=240), *p.communicate()) for kind, p in procs]

    confirms = [(code, err) for kind, code, _out, err in results if kind == "confirm"]
    assert sorted(code for code, _ in confirms) == [0] + [5] * 9, results  # C3: 5 = refused
    for code, err in confirms:
        _clean(err)
        if code == 5:
            lines = err.strip().splitlines()
            assert len(lines) == 1, err
            # Who got there first is named (the user and host that confirmed), or that it applies.
            assert ("task 1 was already confirmed" in lines[0] and "confirmed it" in lines[0]) \
                or "task 1 is running" in lines[0], err
    for kind, code, out, err in results:
        if kind == "plan":
            _clean(err)
            assert code in (0, 2), (code, out, err)  # each speculative plan ran to its end
    task = env.task(1)
    assert task["status"] == "applied"
    assert [v["task"] for v in env.ok("state", "versions", "net", "--json").json()] == [1]
    confirmations = [h for h in task["history"]
                     if h["kind"] == "status" and (h["from"], h["to"]) == ("apply_pending", "running")]
    assert len(confirmations) == 1


def test_ten_confirmations_from_two_machines_give_one_apply_and_nine_refusals(team: Any) -> None:
    """Five `confirm-apply` per machine (own hostname and pids, one PostgreSQL store). The two
    runners share one work root here (as on a shared file system), so that this test is about
    the store's locks alone and not about rebuilding a plan made on the other machine."""
    a, b = team.machine("ci-a"), team.machine("ci-b")
    b.vars["IACCTL_WORK_ROOT"] = a.vars["IACCTL_WORK_ROOT"]
    a.workspace("net")
    a.ok("plan", "net", "--quiet", code=2)

    procs = [(m.name, m.spawn("confirm-apply", "1", "--quiet")) for _ in range(5) for m in (a, b)]
    results = [(name, p.wait(timeout=240), *p.communicate()) for name, p in procs]

    assert sorted(code for _, code, _, _ in results) == [0] + [5] * 9, results
    winner = next(name for name, code, _, _ in results if code == 0)
    for _name, code, _out, err in results:
        _clean(err)
        if code == 5:
            lines = err.strip().splitlines()
            assert len(lines) == 1, err
            assert (f"@{winner} confirmed it" in lines[0]) or "task 1 is running" in lines[0] \
                or "task 1 is applied" in lines[0], err
    task = b.task(1)
    assert task["status"] == "applied"
    assert [v["task"] for v in b.ok("state", "versions", "net", "--json").json()] == [1]
