"""What a cluster needs (issue 3 item 9): the runner image definition and the pool's RBAC are in
the repository, and they grant what the Kubernetes runtime uses."""

from __future__ import annotations

from pathlib import Path

import yaml

from iacctl.runtimes.kubernetes import KubernetesRuntime, KubeSpec

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"


def test_rbac_grants_pods_and_exec_to_the_service_account() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text()))
    by_kind = {d["kind"]: d for d in docs}
    assert set(by_kind) == {"ServiceAccount", "Role", "RoleBinding"}
    rules = {r: set(rule["verbs"]) for rule in by_kind["Role"]["rules"] for r in rule["resources"]}
    # What runtimes/kubernetes.py calls: list/create/delete/read pods, exec (websocket GET).
    assert {"get", "list", "create", "delete"} <= rules["pods"]
    assert {"get", "create"} <= rules["pods/exec"]
    binding = by_kind["RoleBinding"]
    assert binding["roleRef"]["name"] == by_kind["Role"]["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": by_kind["ServiceAccount"]["metadata"]["name"]}]


def test_runner_image_has_what_the_runtime_execs() -> None:
    text = (DEPLOY / "Dockerfile.runner").read_text()
    assert "FROM " in text and "terraform" in text and "sha256sum -c" in text
    assert "/var/lib/iacctl" in text  # the default work root, writable by the runner user
    manifest = KubernetesRuntime("k8s-prod", KubeSpec(namespace="iac", image="r/i:1")).pod_manifest("p-1")
    assert manifest["metadata"]["labels"] == {"iacctl.io/pool": "k8s-prod", "iacctl.io/pod": "p-1",
                                              "app.kubernetes.io/managed-by": "iacctl"}
    assert manifest["spec"]["volumes"] == [{"name": "work", "emptyDir": {}}]
