"""`iacctl agent start|stop|status` (issue 20): the per-user agent that runs commands without
Python's import cost. The agent itself is iacctl.agent; these commands only talk to it."""

from __future__ import annotations

import time

import typer

from iacctl.cli.render import message, print_json

app = typer.Typer(help="The agent: a per-user process that runs commands without the start-up cost.",
                  no_args_is_help=True)


@app.command("start")
def start(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Start the agent (IACCTL_AGENT=auto starts it on the first command at a terminal)."""
    from iacctl.agent import ask
    from iacctl.errors import IacctlError
    from iacctl.launch import NoAgent, agent_dir, start_agent

    try:
        view = ask("status")
    except NoAgent:
        start_agent(agent_dir(), wait=10.0)
        try:
            view = ask("status")
        except NoAgent as exc:
            raise IacctlError(f"the agent did not start: {exc} (see {agent_dir()}/agent.log)") from None
    if as_json:
        print_json(view)
    else:
        message(f"agent running: pid {view['pid']}, socket {view['socket']}")


@app.command("stop")
def stop(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Stop the agent; commands it is running finish first."""
    from iacctl.agent import ask
    from iacctl.launch import NoAgent

    try:
        view = ask("stop")
    except NoAgent:
        view = {"stopping": False, "pid": None}
    if view["pid"] is not None:
        for _ in range(100):  # it exits once its running commands end
            try:
                ask("status")
            except NoAgent:
                break
            time.sleep(0.05)
    if as_json:
        print_json(view)
    else:
        message(f"agent stopped (pid {view['pid']})" if view["pid"] is not None else "no agent running")


@app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Whether the agent runs: its pid, memory, commands served; exit 1 when none runs."""
    from iacctl.agent import ask
    from iacctl.errors import IacctlError
    from iacctl.launch import NoAgent

    try:
        view = ask("status")
    except NoAgent as exc:
        if as_json:
            print_json({"running": False, "reason": str(exc)})
            raise typer.Exit(1) from None
        raise IacctlError(f"no agent running ({exc})") from None
    if as_json:
        print_json(view)
    else:
        message(f"agent running: pid {view['pid']}, {view['rss_kib'] / 1024:.1f} MiB, {view['served']} "
                f"command(s) served, {view['running']} running; socket {view['socket']}")
