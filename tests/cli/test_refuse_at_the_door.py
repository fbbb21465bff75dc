"""Issue 21 item 4: input a user would want refused is refused at the door: one line on stderr,
exit 64, the store unchanged."""

from __future__ import annotations

from iacctl.domain.variables import VALUE_MAX_BYTES
from tests.conftest import Env


def _refused(r: object, *words: str) -> None:
    code, err = r.code, r.err  # type: ignore[attr-defined]
    assert code == 64, (code, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)


def test_variable_values_are_checked_at_var_set(env: Env) -> None:
    env.workspace("net")

    def variables() -> list[dict[str, object]]:
        return env.ok("workspace", "var", "list", "net", "--json").json()  # type: ignore[no-any-return]

    big = "x" * (VALUE_MAX_BYTES + 1)
    _refused(env.run("workspace", "var", "set", "net", "blob", "-", "--sensitive", input=big),
             "variable blob", f"{VALUE_MAX_BYTES + 1} bytes", "the limit is 64 KiB")
    _refused(env.run("workspace", "var", "set", "net", "tags", "{a = ", "--hcl"),
             "the value of tags is not an HCL expression", "--hcl")
    _refused(env.run("workspace", "var", "set", "net", "tags", "1\nother = 2", "--hcl"), "not an HCL expression")
    _refused(env.run("workspace", "var", "set", "net", "token", "-", "--sensitive", input=""),
             "sensitive variable token is empty", "--allow-empty")
    assert variables() == []

    env.ok("workspace", "var", "set", "net", "tags", '{\n  team = "net"\n  ports = [80, 443]\n}', "--hcl")
    env.ok("workspace", "var", "set", "net", "token", "-", "--sensitive", "--allow-empty", input="")
    env.ok("workspace", "var", "set", "net", "blob", "-", input="y" * VALUE_MAX_BYTES)
    assert sorted(v["key"] for v in variables()) == ["blob", "tags", "token"]  # type: ignore[type-var]
    # The accepted values reach Terraform: a plan runs with them.
    env.ok("plan", "net", "-q", "--plan-only", code=2)


def test_empty_store_names_case_clashes_and_long_names(env: Env) -> None:
    env.workspace("net")
    default_store = env.root / "home" / ".local" / "share" / "iacctl"

    _refused(env.run("workspace", "list", "--db", ""), "--db is empty")
    _refused(env.run("workspace", "create", "web", "--dir", str(env.root), extra_env={"IACCTL_DB": ""}),
             "IACCTL_DB is set but empty")
    assert not default_store.exists()

    _refused(env.run("workspace", "create", "Net", "--dir", str(env.root)),
             "workspace 'Net' already exists as 'net' (names are unique regardless of case)")
    long = "n" * 5000
    for args in (("workspace", "show", long), ("workspace", "create", long, "--dir", str(env.root)),
                 ("workspace", "var", "set", "net", long, "v")):
        r = env.run(*args)
        _refused(r, "(5000 characters)")
        assert len(r.err) < 300, r.err
    assert [w["name"] for w in env.ok("workspace", "list", "--json").json()] == ["net"]
    r = env.run("workspace", "show", "NET")
    _refused(r, "unknown workspace 'NET'; did you mean 'net'?")


def test_a_store_that_already_holds_names_differing_in_case_keeps_working(env: Env) -> None:
    env.workspace("net")
    app = env.app()
    from iacctl.store import repo
    from iacctl.store.models import Workspace

    with app.store.write() as session:  # as an older iacctl let it be created
        ws = repo.get_workspace(session, "net")
        session.add(Workspace(name="NET", source_dir=ws.source_dir, pool_id=ws.pool_id, created_at=repo.now()))
    app.store.dispose()
    assert env.ok("workspace", "show", "NET", "--json").json()["name"] == "NET"
    assert env.ok("workspace", "show", "net", "--json").json()["name"] == "net"
    assert [w["name"] for w in env.ok("workspace", "list", "--json").json()] == ["NET", "net"]
