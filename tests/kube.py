"""Helpers for tests of Kubernetes pools against the fake API server (tests/fixtures/fake_kube)."""

from __future__ import annotations

from typing import Any

from tests.conftest import Env

NS = "iac"
POOL = "k8s-prod"


def kube_env(env: Env, fake_kube: Any) -> Env:
    """Point the environment's iacctl at the fake cluster (KUBECONFIG, as a user would)."""
    env.vars["KUBECONFIG"] = str(fake_kube.kubeconfig)
    return env


def kube_pool(env: Env, fake_kube: Any, *extra: str, name: str = POOL) -> None:
    kube_env(env, fake_kube)
    env.ok("pool", "create", name, "--backend", "kubernetes", "--namespace", NS, "--image",
           "registry.example/iacctl-runner:1", "--slots-per-pod", "3", "--min-pods", "0", "--max-pods", "10",
           "--context", "fake", *extra)


def pods_of(env: Env, pool: str = POOL) -> list[dict[str, Any]]:
    return env.ok("pods", "list", "--pool", pool, "--json").json()  # type: ignore[no-any-return]


def api_pods(fake_kube: Any) -> list[str]:
    return sorted(p["metadata"]["name"] for p in fake_kube.pods(NS))


def log_of(env: Env, task_id: int) -> str:
    return env.ok("tasks", "logs", str(task_id)).out
