import os, signal, time, json
from tests.conftest import Env

def clean(s): return "\n".join(l for l in s.splitlines() if l.strip() and "execution halted" not in l)

def test_kill_apply(env: Env) -> None:
    env.workspace("slow", "slow_apply")
    env.ok("workspace", "var", "set", "slow", "sleep", "30")
    t0 = time.monotonic()
    env.ok("plan", "slow", code=2)
    print("planned", time.monotonic() - t0)
    p = env.spawn("confirm-apply", "1")
    env.wait_for(1, lambda t: t["stage"] == "applying", timeout=120)
    print("applying stage after", time.monotonic() - t0)
    deadline = time.monotonic() + 30
    while "terraform_data.first: Creation complete" not in env.ok("tasks", "logs", "1").out:
        time.sleep(0.2)
    print("applying reached after", time.monotonic() - t0)
    p.kill()
    out, err = p.communicate(timeout=120)
    print("exit", p.returncode, time.monotonic() - t0)
    cp = env.task(1)
    os.system("ps -ef --forest | grep -v grep | grep -B3 -A3 'sleep 30'")
    time.sleep(3)
    os.system("ps -ef --forest | grep -v grep | grep -B3 -A3 'sleep 30'")
    r = env.run("pods", "recover", "--json"); print("recover", r.code, r.out, r.err, time.monotonic() - t0)
    r = env.run("pods", "recover", "--json"); print("recover2", r.code, r.out, r.err, time.monotonic() - t0)
    t = env.task(1); print(t["status"], t["stage"], t["error"])
    print(clean(env.ok("tasks", "logs", "1").out)[-2500:])
    print(env.ok("pods", "list", "--json").out)
    print(env.ok("workspace", "show", "slow", "--json").out)
    print(env.ok("state", "versions", "slow", "--json").out)
    print(env.ok("state", "pull", "slow").out)
    print(list((env.work_root).rglob("slot-*")))
    print("end", time.monotonic() - t0)
    os.system("ps -ef --forest | grep -v grep | grep -B2 -A2 sleep")
