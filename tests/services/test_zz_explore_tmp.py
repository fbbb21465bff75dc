import os, signal, time, json
from tests.conftest import Env

def test_sigint_plan(env: Env) -> None:
    env.workspace("big", "many_resources")
    t0 = time.monotonic()
    p = env.spawn("plan", "big")
    while env.run("tasks", "show", "1").code != 0: time.sleep(0.1)
    env.wait_for(1, lambda t: t["stage"] == "planning", timeout=120)
    print("planning reached after", time.monotonic() - t0)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    print("exit", p.returncode, time.monotonic() - t0)
    print(out[-2000:].replace("Error: execution halted","")); print(err[-2000:])
    print(json.dumps(env.task(1), indent=1))
    print(env.ok("tasks", "logs", "1").out.replace("Error: execution halted","").replace("\n\n","")[-3000:])
