import os, signal, time, json
from tests.conftest import Env

def clean(s): return "\n".join(l for l in s.splitlines() if l.strip() and "execution halted" not in l)

def test_kill_plan(env: Env) -> None:
    env.workspace("big", "many_resources")
    t0 = time.monotonic()
    p = env.spawn("plan", "big")
    while env.run("tasks", "show", "1").code != 0: time.sleep(0.1)
    env.wait_for(1, lambda t: t["stage"] == "planning", timeout=120)
    print("planning reached after", time.monotonic() - t0)
    p.kill()
    out, err = p.communicate(timeout=120)
    print("exit", p.returncode, time.monotonic() - t0)
    t = env.task(1); print(t["status"], t["stage"])
    r = env.run("pods", "recover", "--json"); print("recover", r.code, r.out, r.err, time.monotonic() - t0)
    r = env.run("pods", "recover", "--json"); print("recover2", r.code, r.out, r.err)
    t = env.task(1); print(t["status"], t["stage"], t["error"])
    print(clean(env.ok("tasks", "logs", "1").out)[:1500])
    print(env.ok("pods", "list", "--json").out)
    print(env.ok("workspace", "show", "big", "--json").out)
    print(list((env.work_root).rglob("slot-*")))
