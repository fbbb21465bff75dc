"""How iacctl calls Terraform (or OpenTofu): the binary, its environment, its arguments."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from iacctl.domain.environment import caller_environment
from iacctl.errors import TaskFailed, TerraformError, UsageError

PLAN_FILE = "tfplan"
STATE_FILE = "terraform.tfstate"
ERRORED_STATE_FILE = "errored.tfstate"  # where Terraform puts a state it could not write
# E8: iacctl keeps the state, so whatever backend the configuration names, Terraform runs with
# the local backend in the work directory. An override file replaces (or adds) the backend.
BACKEND_OVERRIDE_FILE = "zz_iacctl_backend_override.tf"
BACKEND_OVERRIDE = b"""# Written by iacctl: the state lives in iacctl's store, so Terraform uses a local file here.
terraform {
  backend "local" {
    path = "terraform.tfstate"
  }
}
"""


def find_binary(configured: str | None, version: str | None = None,
                note: Callable[[str], None] = lambda _: None) -> str:
    """E10: the workspace's version (downloaded once and cached), or its binary (a path or a
    name), else `terraform` on PATH."""
    if version:
        from iacctl.executor.binaries import ensure_version

        return ensure_version(version, note)
    name = configured or os.environ.get("IACCTL_TERRAFORM") or "terraform"
    if os.sep in name:
        path = Path(name).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise TerraformError(f"the Terraform binary {name} does not exist or is not executable")
        return str(path.absolute())
    found = shutil.which(name)
    if found is None:
        raise TerraformError(f"the Terraform binary {name!r} was not found on PATH; install it, or name the "
                             "binary with: iacctl workspace set NAME --terraform PATH (or IACCTL_TERRAFORM)")
    return found


def check_binary_setting(value: str) -> str:
    """For `--terraform`: refuse a path that is not an executable file at once (X4)."""
    try:
        return find_binary(value) if os.sep in value else value
    except TerraformError as exc:
        raise UsageError(str(exc)) from None


def environment(
    terraform_vars: Mapping[str, str], env_vars: Mapping[str, str], plugin_cache: Path | None
) -> dict[str, str]:
    """Issue 9, E9: Terraform sees the workspace's variables and the allowlisted part of the
    caller's environment (domain.environment), never the caller's TF_VAR_*, TF_CLI_ARGS* or
    TF_WORKSPACE."""
    env = caller_environment(os.environ)
    # A CLI config that does not exist only makes Terraform warn on every command (NOTES).
    cli_config = env.get("TF_CLI_CONFIG_FILE")
    if cli_config and not Path(cli_config).is_file():
        del env["TF_CLI_CONFIG_FILE"]
    env.update({"TF_IN_AUTOMATION": "1", "TF_INPUT": "0", "CHECKPOINT_DISABLE": "1"})
    if plugin_cache is not None and "TF_PLUGIN_CACHE_DIR" not in env:
        try:
            plugin_cache.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            from iacctl.runtimes.base import disk_error

            raise TaskFailed(disk_error(exc, "making the plugin cache", plugin_cache)) from None
        env["TF_PLUGIN_CACHE_DIR"] = str(plugin_cache)
    for key, value in terraform_vars.items():
        env[f"TF_VAR_{key}"] = value
    env.update(env_vars)
    return env


def _no_color(color: bool) -> list[str]:
    return [] if color else ["-no-color"]


def init_args(binary: str, *, color: bool = False) -> list[str]:
    return [binary, "init", "-input=false", *_no_color(color)]


def plan_args(binary: str, *, color: bool = False, refresh_only: bool = False) -> list[str]:
    # F5: a drift check is a refresh-only plan, saved with -out like any plan; exit 2 is drift.
    mode = ["-refresh-only"] if refresh_only else []
    return [binary, "plan", "-input=false", *_no_color(color), *mode, "-detailed-exitcode", f"-out={PLAN_FILE}"]


def show_json_args(binary: str) -> list[str]:
    return [binary, "show", "-json", "-no-color", PLAN_FILE]


def apply_args(binary: str, *, color: bool = False) -> list[str]:
    return [binary, "apply", "-input=false", *_no_color(color), PLAN_FILE]
