"""The Kubernetes runtime (SPEC S7): slots live in pods, commands run through the exec API.

The ONLY module that imports the official `kubernetes` client (imported lazily, so `iacctl
--help` stays quick); its ApiException never leaves this module: it becomes PodGone (the pod is
not there any more, S5) or RuntimeError_.

A slot's work directory is `<work root>/slots/<index>` inside its pod; every path sent to a pod
is absolute under the pool's work root. Files move in and out as tar streams over exec (as
`kubectl cp` does); the bytes going in are read with `head -c SIZE`, so no end-of-stdin signal
is needed and both exec protocols (v4 and v5) work.

Long commands survive a dropped exec connection (issue 3 item 2): Terraform is started detached
(`setsid`) with its output and exit status written to files in `<slot>/.iacctl/`; iacctl then
follows the output file from a byte offset and, when the connection drops, reattaches from the
offset it had reached. The recovery sweep reads the same files (`command_state`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shlex
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from iacctl.domain.environment import allowed as caller_allowed
from iacctl.runtimes.base import (
    ClusterRefused,
    CommandInDoubt,
    CommandResult,
    CommandState,
    PodBackend,
    PodGone,
    PodInfo,
    RuntimeError_,
    SlotPlace,
)

POOL_LABEL = "iacctl.io/pool"
POD_LABEL = "iacctl.io/pod"
MANAGED_LABEL = "app.kubernetes.io/managed-by"
DEFAULT_WORK_ROOT = "/var/lib/iacctl"
CONTROL_DIR = ".iacctl"  # inside the slot: out, exit, pid of the detached command
_EXIT_MARK = b"iacctl-exit "
_FOLLOW_POLL = "0.2"
_REATTACH_TRIES = 40
_REATTACH_PAUSE_S = 0.5
_POD_START_TIMEOUT_S = 180.0
_START_CONFIRM_S = 5.0  # how long a claimed start may take to write its files
# Issue 10 item 6: a Pending container waiting for one of these will not start without a fix.
_STUCK_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
                            "CreateContainerConfigError"})
# Terraform's own environment in the pod: only what iacctl adds or changes is sent, never the
# rest of this machine's environment (the pod has its own PATH and HOME).
_NOT_SENT = frozenset({"TF_PLUGIN_CACHE_DIR", "PATH", "HOME", "PWD", "SHLVL", "_"})


@dataclass(frozen=True)
class KubeSpec:
    """What a pool's pods are made of (S1: namespace, image, resources, service account, context)."""

    namespace: str
    image: str
    context: str | None = None
    service_account: str | None = None
    resources: dict[str, dict[str, str]] = field(default_factory=dict)  # requests / limits
    work_root: str = DEFAULT_WORK_ROOT

    @classmethod
    def from_json(cls, text: str | None, work_root: str | None) -> KubeSpec:
        raw: dict[str, Any] = json.loads(text) if text else {}
        return cls(namespace=raw.get("namespace") or "default", image=raw.get("image") or "",
                   context=raw.get("context"), service_account=raw.get("service_account"),
                   resources=raw.get("resources") or {}, work_root=work_root or DEFAULT_WORK_ROOT)

    def to_json(self) -> str:
        return json.dumps({"namespace": self.namespace, "image": self.image, "context": self.context,
                           "service_account": self.service_account, "resources": self.resources},
                          sort_keys=True)


@dataclass
class _ExecResult:
    code: int | None  # None: the connection dropped before the command's status arrived
    stdout: bytes
    stderr: bytes


def pod_phase_alive(phase: str | None, deleting: bool) -> bool:
    """S7: a pod that is gone from the API, failed, succeeded or being deleted is lost."""
    return not deleting and phase not in ("Failed", "Succeeded", "Unknown")


def kube_contexts() -> list[str] | None:
    """The context names of the kubeconfig (KUBECONFIG or ~/.kube/config), or None when there
    is no kubeconfig at all. Raises RuntimeError_ for one that cannot be read."""
    if not os.environ.get("KUBECONFIG") and not Path("~/.kube/config").expanduser().is_file():
        return None
    from kubernetes import config

    try:
        contexts, _active = config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError, ValueError, TypeError) as exc:
        raise RuntimeError_(f"cannot read the kubeconfig: {exc}") from None
    return [str(c.get("name")) for c in contexts or []]


class KubernetesRuntime:
    def __init__(self, pool: str, spec: KubeSpec) -> None:
        self.pool = pool
        self.spec = spec
        self._api_client_: Any = None
        self._exec_api: Any = None

    # -- the client ----------------------------------------------------------------------------

    def _api_client(self) -> Any:
        """The configured ApiClient, without the typed API classes: `CoreV1Api` alone takes
        about 0.5 s to import, which the pod list of the sweep does without (item 10)."""
        if self._api_client_ is None:
            from kubernetes import client, config

            cfg = client.Configuration()
            try:
                if os.environ.get("KUBECONFIG") or self.spec.context or Path("~/.kube/config").expanduser().is_file():
                    config.load_kube_config(context=self.spec.context, client_configuration=cfg)  # type: ignore[no-untyped-call]
                else:
                    config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            except (config.ConfigException, OSError, ValueError, TypeError) as exc:
                raise RuntimeError_(f"cannot load the Kubernetes configuration: {exc}") from None
            self._api_client_ = client.ApiClient(cfg)
        return self._api_client_

    def _exec_client(self) -> Any:
        """The typed API, for exec only. NOTES: stream() swaps call_api on the ApiClient it is
        given, so exec gets an ApiClient of its own."""
        if self._exec_api is None:
            from kubernetes import client

            self._exec_api = client.CoreV1Api(client.ApiClient(self._api_client().configuration))
        return self._exec_api

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise self._api_error(what, exc.status or 0, exc.reason or "", exc.body) from None
        except RuntimeError_:
            raise
        except Exception as exc:  # urllib3 connection errors and the like
            raise RuntimeError_(f"{what}: cannot reach the Kubernetes API ({exc})") from None

    # -- pods (S3, S7) -------------------------------------------------------------------------

    def selector(self) -> str:
        return f"{POOL_LABEL}={self.pool}"

    def _request(self, what: str, method: str, path: str, *, query: list[tuple[str, str]] | None = None,
                 body: dict[str, Any] | None = None) -> Any:
        """One call of the pods API through the configured ApiClient, its JSON answer as dicts.
        The typed CoreV1Api takes about 0.5 s to import and V1Pod objects for 1,000 pods cost
        more than the call (item 10): only exec needs them. 404 is PodGone, as in _call."""
        api_client = self._api_client()
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"

        def send() -> Any:
            method_, url, header_params, body_, _ = api_client.param_serialize(
                method, path, path_params={"namespace": self.spec.namespace}, query_params=query or [],
                header_params=headers, body=body, auth_settings=["BearerToken"])
            response = api_client.call_api(method_, url, header_params=header_params, body=body_)
            response.read()
            return response

        response = self._call(what, send)
        if not 200 <= response.status < 300:
            raise self._api_error(what, response.status, response.reason or "", response.data)
        try:
            return json.loads(response.data)
        except ValueError:
            raise RuntimeError_(f"{what}: the Kubernetes API answered with something that is not JSON") from None

    def _api_error(self, what: str, status: int, reason: str, body: Any) -> RuntimeError_:
        """What an error answer of the API server means for the pool (issue 10 item 6). A refusal
        that waiting does not cure (no namespace, RBAC, quota, admission) is ClusterRefused,
        naming the cause and the fix; a pod not found is PodGone; anything else RuntimeError_."""
        doc: dict[str, Any] = {}
        with contextlib.suppress(ValueError, TypeError):
            parsed = json.loads(body) if body else {}
            doc = parsed if isinstance(parsed, dict) else {}
        message = str(doc.get("message") or reason or "no message").strip()
        kind = str((doc.get("details") or {}).get("kind") or "")
        ns, pool = self.spec.namespace, self.pool
        if status == 404 and kind == "namespaces":
            return ClusterRefused(
                f"{what}: namespace {ns} does not exist{self._in_context()}; create it (kubectl create namespace "
                f"{ns}) and apply deploy/kubernetes/rbac.yaml in it, or move the pool to a namespace that exists "
                f"(iacctl pool set {pool} --namespace NS)")
        if status == 404:
            return PodGone(f"{what}: not found")
        if status == 403 and "exceeded quota" in message:
            return ClusterRefused(
                f"{what}: the quota of namespace {ns} refuses it ({message}); raise the namespace's ResourceQuota "
                f"or lower the pool's pod count (iacctl pool set {pool} --max-pods N)")
        if status == 403 and "admission webhook" in message:
            return ClusterRefused(f"{what}: an admission webhook denies it ({message}); change the pod spec "
                                  f"(iacctl pool show {pool}) or the webhook's policy for namespace {ns}")
        if status == 403:
            return ClusterRefused(
                f"{what}: forbidden by the cluster's RBAC ({message}); grant the identity iacctl uses the Role in "
                f"deploy/kubernetes/rbac.yaml (kubectl apply -n {ns} -f deploy/kubernetes/rbac.yaml)")
        if status in (400, 422) and doc.get("reason") in ("Invalid", "BadRequest") and "pod" in what:
            return ClusterRefused(f"{what}: the cluster rejects pool {pool}'s pod ({message}); change the pool's "
                                  f"spec (iacctl pool show {pool}) or the admission policy of namespace {ns}")
        return RuntimeError_(f"{what}: Kubernetes API error {status} {message}".strip())

    def _in_context(self) -> str:
        return f" in the cluster of context {self.spec.context}" if self.spec.context else " in the cluster"

    def list_pods(self) -> dict[str, PodInfo]:
        """One list call with the pool's label selector (cheap with thousands of pods)."""
        try:
            result = self._request("list pods", "GET", "/api/v1/namespaces/{namespace}/pods",
                                   query=[("labelSelector", self.selector())])
        except PodGone:
            raise RuntimeError_(f"namespace {self.spec.namespace} not found") from None
        pods: dict[str, PodInfo] = {}
        for item in result.get("items") or []:
            name, phase, deleting = _pod_fields(item)
            pods[name] = PodInfo(name, phase or "Pending", deleting, pod_phase_alive(phase, deleting),
                                 stuck=_stuck(item, self.pool) if phase == "Pending" else None)
        return pods

    def pod_manifest(self, name: str) -> dict[str, Any]:
        root = self.spec.work_root
        container: dict[str, Any] = {
            "name": "runner",
            "image": self.spec.image,
            "command": ["sh", "-c", f"mkdir -p {shlex.quote(root)}/slots && exec sleep 2147483647"],
            "volumeMounts": [{"name": "work", "mountPath": root}],
        }
        if self.spec.resources:
            container["resources"] = self.spec.resources
        spec: dict[str, Any] = {
            "containers": [container],
            # A restarted container has lost its work directories: let it show as Failed (lost).
            "restartPolicy": "Never",
            "volumes": [{"name": "work", "emptyDir": {}}],
        }
        if self.spec.service_account:
            spec["serviceAccountName"] = self.spec.service_account
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {POOL_LABEL: self.pool, POD_LABEL: name,
                                                  MANAGED_LABEL: "iacctl"}},
            "spec": spec,
        }

    def create_pod(self, name: str) -> None:
        self._request(f"create pod {name}", "POST", "/api/v1/namespaces/{namespace}/pods",
                      body=self.pod_manifest(name))

    def wait_running(self, names: Sequence[str], timeout: float = _POD_START_TIMEOUT_S) -> dict[str, PodInfo]:
        """Wait until each pod is Running, lost or stuck (an image that cannot be pulled will not
        be, however long one waits); returns each pod as last seen."""
        deadline = time.monotonic() + timeout
        while True:
            pods = self.list_pods()
            seen = {n: pods.get(n) or PodInfo(n, "Gone", False, False) for n in names}
            waiting = [n for n, p in seen.items() if p.phase == "Pending" and p.alive and p.stuck is None]
            if not waiting or time.monotonic() > deadline:
                return seen
            time.sleep(0.3)

    def delete_pod(self, name: str) -> None:
        try:
            self._request(f"delete pod {name}", "DELETE", f"/api/v1/namespaces/{{namespace}}/pods/{name}",
                          query=[("gracePeriodSeconds", "0")])
        except PodGone:
            pass

    def pod_backend(self) -> PodBackend | None:
        return self

    def new_pod_name(self) -> str:
        return new_pod_name(self.pool)

    def pod_alive(self, pod: str) -> bool:
        try:
            item = self._request(f"read pod {pod}", "GET", f"/api/v1/namespaces/{{namespace}}/pods/{pod}")
        except PodGone:
            return False
        _, phase, deleting = _pod_fields(item)
        return pod_phase_alive(phase, deleting)

    # -- exec ----------------------------------------------------------------------------------

    def _exec(
        self, pod: str, argv: Sequence[str], *, stdin: bytes | None = None,
        on_stdout: Callable[[bytes], None] | None = None, tick: Callable[[], None] | None = None,
    ) -> _ExecResult:
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import stream

        api = self._exec_client()
        try:
            ws = stream(api.connect_get_namespaced_pod_exec, pod, self.spec.namespace, command=list(argv),
                        stdin=stdin is not None, stdout=True, stderr=True, tty=False,
                        _preload_content=False, binary=True)
        except ApiException as exc:
            if "403" in f"{exc.status} {exc.reason}":
                # The websocket handshake was refused: RBAC without pods/exec.
                raise self._api_error(f"exec in pod {pod}", 403, str(exc.reason or ""), exc.body) from None
            if not self.pod_alive(pod):
                raise PodGone(f"pod {pod} is gone") from None
            raise RuntimeError_(f"exec in pod {pod} failed: {exc.reason or exc.status}") from None
        out, err, status = bytearray(), bytearray(), bytearray()

        def take() -> None:  # what has arrived on stdout, stderr and the status channel
            chunk = ws.read_channel(1)
            if chunk:
                out.extend(chunk)
                if on_stdout is not None:
                    on_stdout(chunk)
            err.extend(ws.read_channel(2))
            status.extend(ws.read_channel(3))

        try:
            if stdin:
                for i in range(0, len(stdin), 65536):
                    ws.write_stdin(stdin[i : i + 65536])
            while ws.is_open():
                ws.update(timeout=0.2)
                take()
                if tick is not None:
                    tick()
        except Exception:
            pass  # a dropped connection: the status below is missing and the caller decides
        finally:
            try:
                take()
                ws.close()
            except Exception:
                pass
        return _ExecResult(_exit_code(bytes(status)), bytes(out), bytes(err))

    def _known_gone(self, pod: str) -> bool:
        """True only when the API says the pod is gone; an API that cannot be asked proves nothing."""
        try:
            return not self.pod_alive(pod)
        except RuntimeError_:
            return False

    def _exec_or_none(self, pod: str, script: str, *, on_stdout: Callable[[bytes], None] | None = None,
                      tick: Callable[[], None] | None = None) -> _ExecResult:
        """An exec whose failure to connect (an API error, a refused upgrade) counts as a
        dropped connection: while a detached command may run, one failed call proves nothing
        (item 1). PodGone still ends it."""
        try:
            return self._exec(pod, ["sh", "-c", script], on_stdout=on_stdout, tick=tick)
        except PodGone:
            raise
        except RuntimeError_:
            return _ExecResult(None, b"", b"")

    def _sh(self, pod: str, script: str, *, stdin: bytes | None = None) -> _ExecResult:
        result = self._exec(pod, ["sh", "-c", script], stdin=stdin)
        if result.code is None:
            if not self.pod_alive(pod):
                raise PodGone(f"pod {pod} is gone")
            raise RuntimeError_(f"the exec connection to pod {pod} dropped")
        return result

    # -- slots' work directories ---------------------------------------------------------------

    def work_dir(self, place: SlotPlace) -> str:
        return f"{self.spec.work_root}/slots/{place.slot_index}"

    def plugin_cache(self, place: SlotPlace) -> Path | None:
        return None  # the pod's own, set in the command that starts Terraform there

    def work_dir_exists(self, place: SlotPlace) -> bool:
        try:
            return self._sh(place.pod, f"test -d {shlex.quote(self.work_dir(place))}").code == 0
        except PodGone:
            return False

    def reset_work_dir(self, place: SlotPlace) -> None:
        d = shlex.quote(self.work_dir(place))
        result = self._sh(place.pod, f"rm -rf {d} && mkdir -p {d} && chmod 700 {d}")
        if result.code != 0:
            raise RuntimeError_(f"cannot make the work directory {place} in pod {place.pod}: "
                                f"{_text(result.stderr)}")

    def remove_work_dir(self, place: SlotPlace) -> None:
        try:
            self._sh(place.pod, f"rm -rf {shlex.quote(self.work_dir(place))}")
        except RuntimeError_:
            # Gone with its pod, or the pod cannot be reached now: the next task in the slot
            # resets the directory before it uses it.
            pass

    def _put_tar(self, place: SlotPlace, data: bytes, flags: str) -> None:
        d = shlex.quote(self.work_dir(place))
        result = self._sh(place.pod, f"mkdir -p {d} && head -c {len(data)} | tar {flags} - -C {d}", stdin=data)
        if result.code != 0:
            raise RuntimeError_(f"cannot copy files into {place} (pod {place.pod}): {_text(result.stderr)}")

    def extract_archive(self, place: SlotPlace, tar_gz: bytes) -> None:
        self._put_tar(place, tar_gz, "xzf")

    def write_file(self, place: SlotPlace, relpath: str, data: bytes) -> None:
        self._put_tar(place, _one_file_tar(relpath, data), "xf")

    def read_file(self, place: SlotPlace, relpath: str) -> bytes | None:
        d = shlex.quote(self.work_dir(place))
        rel = shlex.quote(relpath)
        result = self._sh(place.pod, f"cd {d} 2>/dev/null || exit 3; [ -f {rel} ] || exit 4; tar cf - {rel}")
        if result.code in (3, 4):
            return None
        if result.code != 0:
            raise RuntimeError_(f"cannot read {relpath} from {place}: {_text(result.stderr)}")
        with tarfile.open(fileobj=io.BytesIO(result.stdout), mode="r:") as tar:
            for member in tar.getmembers():
                if member.isfile() and PurePosixPath(member.name) == PurePosixPath(relpath):
                    extracted = tar.extractfile(member)
                    return extracted.read() if extracted is not None else None
        return None

    # -- a task's work directory kept for an operator (issue 13 item 6) --------------------------

    def kept_dir(self, pod: str, task_id: int) -> str:
        return f"{self.spec.work_root}/kept/task-{task_id}"

    def keep_work_dir(self, place: SlotPlace, task_id: int) -> str | None:
        """Move the slot's work directory aside in its pod (a rename: no space needed)."""
        d, kept = shlex.quote(self.work_dir(place)), self.kept_dir(place.pod, task_id)
        try:
            result = self._sh(place.pod, f"[ -d {d} ] || exit 3; mkdir -p {shlex.quote(self.spec.work_root)}/kept "
                                         f"&& rm -rf {shlex.quote(kept)} && mv {d} {shlex.quote(kept)}")
        except RuntimeError_:
            return None
        if result.code == 3:
            return None
        return f"{kept} in pod {place.pod}" if result.code == 0 else f"{self.work_dir(place)} in pod {place.pod}"

    def read_kept_file(self, pod: str, task_id: int, relpath: str) -> bytes | None:
        d, rel = shlex.quote(self.kept_dir(pod, task_id)), shlex.quote(relpath)
        result = self._sh(pod, f"cd {d} 2>/dev/null || exit 3; [ -f {rel} ] || exit 4; cat {rel}")
        if result.code in (3, 4):
            return None
        if result.code != 0:
            raise RuntimeError_(f"cannot read {relpath} from {self.kept_dir(pod, task_id)} in pod {pod}: "
                                f"{_text(result.stderr)}")
        return bytes(result.stdout)

    def remove_kept_dir(self, pod: str, task_id: int) -> None:
        with contextlib.suppress(RuntimeError_):
            self._sh(pod, f"rm -rf {shlex.quote(self.kept_dir(pod, task_id))}")

    # -- commands: detached, followed, reattached ------------------------------------------------

    def _pod_env(self, env: Mapping[str, str]) -> dict[str, str]:
        # The machine's allowlisted variables (proxies, certificates: issue 9) stay here unless
        # the workspace changed them; everything else (the workspace's variables, iacctl's
        # settings) is sent, even when this machine's environment happens to hold the same value.
        here = os.environ
        return {k: v for k, v in env.items()
                if k not in _NOT_SENT and (not caller_allowed(k) or here.get(k) != v)}

    def run(
        self,
        place: SlotPlace,
        argv: Sequence[str],
        env: Mapping[str, str],
        on_line: Callable[[str], None],
        should_stop: Callable[[], bool],
        on_start: Callable[[int], None],
    ) -> CommandResult:
        # Variables (sensitive ones too) go in a file only its owner can read, never on the
        # exec's command line (which the API server logs); the command removes it at once.
        env_lines = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(self._pod_env(env).items()))
        self.write_file(place, f"{CONTROL_DIR}/env", env_lines.encode())
        # The pod's own binary (the image's terraform or tofu), not this machine's path to it.
        command = " ".join(shlex.quote(a) for a in [PurePosixPath(argv[0]).name, *argv[1:]])
        for _ in range(3):
            token = secrets.token_hex(8)
            if self._start(place, command, token):
                return self._follow(place, on_line, should_stop)
        raise RuntimeError_(f"cannot start {argv[0]} in pod {place.pod}: the exec connection kept dropping "
                            "before it started")

    def _start(self, place: SlotPlace, command: str, token: str) -> bool:
        """Start the command detached, as the one command of `token`. True once it is known to
        have started; False when it is known never to start (then it may be started again).

        Issue 10 item 1: the exec that starts it can drop before its answer arrives, and the
        command may or may not be running. The detached shell claims the token (`mkdir`, atomic)
        before it does anything; after a dropped start, iacctl reattaches and either finds the
        command's files under this token, or claims the token itself, which forbids a late start
        for good. Nothing is concluded before one of the two."""
        c = CONTROL_DIR
        inner = (
            # The claim: only one of the detached shell and a later check gets it.
            f"mkdir {c}/claim-{token} 2>/dev/null || exit 0; "
            f"rm -f {c}/out {c}/exit {c}/exit.tmp {c}/pid {c}/id; : > {c}/out; echo $$ > {c}/pid; "
            f"echo {token} > {c}/id; "
            # This shell stays to write the exit status (a caught INT, so its children get the
            # default disposition and SIGINT reaches the whole group, item 5).
            f"trap : INT; . ./{c}/env; rm -f {c}/env; "
            # Providers are cached per pod, beside the slots (a path, so on the command line).
            f"export TF_PLUGIN_CACHE_DIR={shlex.quote(self.spec.work_root + '/plugin-cache')}; "
            f"{command} > {c}/out 2>&1 </dev/null; "
            # Issue 13 item 1: once the command has ended (even killed by the OOM killer), what
            # it started in this session's group ends too, before the exit status is written
            # and iacctl removes the directory; this shell ignores the signal it sends.
            f"code=$?; trap '' TERM; kill -TERM -$$ 2>/dev/null; "
            f"echo $code > {c}/exit.tmp; mv {c}/exit.tmp {c}/exit"
        )
        start = (
            f"cd {shlex.quote(self.work_dir(place))} || exit 3; mkdir -p {c} "
            f"{shlex.quote(self.spec.work_root)}/plugin-cache; "
            # Item 5: `setsid -f` forks in the foreground of this shell. A background job (`&`)
            # of a non-interactive sh starts with SIGINT and SIGQUIT ignored, and so would
            # everything it starts (a --terraform wrapper, a provisioner's commands): a cancel's
            # SIGINT would not reach them.
            f"setsid -f sh -c {shlex.quote(inner)} </dev/null >/dev/null 2>&1; "
            f"i=0; while [ \"$(cat {c}/id 2>/dev/null)\" != {token} ] && [ $i -lt 100 ]; do "
            "sleep 0.05; i=$((i+1)); done; "
            f"cat {c}/pid"
        )
        result = self._exec(place.pod, ["sh", "-c", start])
        if result.code is None:
            return self._confirm_start(place, token)
        if result.code != 0 or not result.stdout.strip().isdigit():
            raise RuntimeError_(f"cannot start {command.split()[0]} in pod {place.pod}: {_text(result.stderr)}")
        return True

    def _confirm_start(self, place: SlotPlace, token: str) -> bool:
        """After a dropped start: True if the command of `token` runs (or ran), False if it never
        will. CommandInDoubt when the pod cannot be asked; PodGone when it is gone."""
        c = CONTROL_DIR
        check = (
            f"cd {shlex.quote(self.work_dir(place))} 2>/dev/null || exit 3; "
            f"if [ \"$(cat {c}/id 2>/dev/null)\" = {token} ]; then echo started; "
            f"elif mkdir {c}/claim-{token} 2>/dev/null; then echo never; "
            "else echo starting; fi"
        )
        claimed_at: float | None = None
        for _ in range(_REATTACH_TRIES):
            result = self._exec_or_none(place.pod, check)
            answer = result.stdout.decode(errors="replace").strip() if result.code == 0 else ""
            if answer == "started":
                return True
            if answer == "never":
                return False
            if result.code == 3:
                if not self.pod_alive(place.pod):
                    raise PodGone(f"pod {place.pod} is gone (deleted, evicted or failed)")
                raise RuntimeError_(f"the work directory of {place} is gone from pod {place.pod}")
            if answer == "starting":
                # Claimed by the detached shell, which writes its files at once.
                claimed_at = claimed_at or time.monotonic()
                if time.monotonic() - claimed_at > _START_CONFIRM_S:
                    break
                time.sleep(0.2)
                continue
            if self._known_gone(place.pod):
                raise PodGone(f"pod {place.pod} is gone (deleted, evicted or failed)")
            time.sleep(_REATTACH_PAUSE_S)
        raise CommandInDoubt(f"the exec that started a command in pod {place.pod} dropped and the pod could not "
                             f"confirm whether it runs ({place})")

    def _follow(self, place: SlotPlace, on_line: Callable[[str], None],
                should_stop: Callable[[], bool]) -> CommandResult:
        offset = 0
        pending = b""
        interrupted = False

        def received(chunk: bytes) -> None:
            nonlocal offset, pending
            offset += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                on_line(raw.decode("utf-8", "replace").rstrip("\r"))

        def tick() -> None:
            nonlocal interrupted
            if not interrupted and should_stop():
                interrupted = True
                self.signal_command(place, "INT")  # E1: SIGINT, then wait for Terraform to stop

        tries = 0
        try:
            while True:
                result = self._exec_or_none(place.pod, self._follow_script(place, offset), on_stdout=received,
                                            tick=tick)
                if result.code is not None and _EXIT_MARK in result.stderr:
                    code = result.stderr.split(_EXIT_MARK, 1)[1].split()[0].decode()
                    if code == "lost":
                        raise RuntimeError_(f"the command in pod {place.pod} died without an exit status")
                    return CommandResult(exit_code=int(code), interrupted=interrupted)
                if result.code == 3:
                    raise RuntimeError_(f"the work directory of {place} is gone from pod {place.pod}")
                # The connection dropped (or the follower died): the command runs on, detached.
                if self._known_gone(place.pod):
                    raise PodGone(f"pod {place.pod} is gone (deleted, evicted or failed)")
                tries += 1
                if tries > _REATTACH_TRIES:
                    # Item 1: the command may still run; nothing may be concluded from it.
                    raise CommandInDoubt(f"lost the exec connection to pod {place.pod} {tries} times while "
                                         f"following the command in {place}")
                time.sleep(_REATTACH_PAUSE_S)
                tick()
        finally:
            if pending:
                on_line(pending.decode("utf-8", "replace").rstrip("\r"))

    def _follow_script(self, place: SlotPlace, offset: int) -> str:
        c = CONTROL_DIR
        return (
            f"cd {shlex.quote(self.work_dir(place))} 2>/dev/null || exit 3; off={offset}; fin=; "
            "while :; do "
            f"  if [ -f {c}/exit ]; then fin=$(cat {c}/exit); "
            f"  elif ! kill -0 \"$(cat {c}/pid 2>/dev/null)\" 2>/dev/null; then "
            f"    sleep 0.3; [ -f {c}/exit ] && fin=$(cat {c}/exit) || fin=lost; fi; "
            f"  size=$(wc -c < {c}/out); "
            "  if [ \"$size\" -gt \"$off\" ]; then "
            f"    tail -c +$((off + 1)) {c}/out | head -c $((size - off)); off=$size; fi; "
            "  if [ -n \"$fin\" ]; then echo \"iacctl-exit $fin\" >&2; exit 0; fi; "
            f"  sleep {_FOLLOW_POLL}; "
            "done"
        )

    def signal_command(self, place: SlotPlace, signal_name: str) -> bool:
        """Send a signal to the detached command's process group (Terraform and what it started)."""
        d = shlex.quote(self.work_dir(place))
        try:
            result = self._sh(place.pod, f"cd {d} 2>/dev/null || exit 3; p=$(cat {CONTROL_DIR}/pid 2>/dev/null) "
                                         f"|| exit 4; kill -{signal_name} -\"$p\" 2>/dev/null")
        except RuntimeError_:
            return False
        return result.code == 0

    def command_state(self, place: SlotPlace) -> CommandState:
        """What the slot's last detached command is doing, read from its files (the sweep)."""
        c = CONTROL_DIR
        try:
            result = self._sh(place.pod, (
                f"cd {shlex.quote(self.work_dir(place))} 2>/dev/null || {{ echo none; exit 0; }}; "
                f"if [ -f {c}/exit ]; then echo exit $(cat {c}/exit); "
                f"elif kill -0 \"$(cat {c}/pid 2>/dev/null)\" 2>/dev/null; then echo running; "
                "else echo none; fi"))
        except PodGone:
            return CommandState(pod_gone=True)
        words = result.stdout.decode().split()
        if words[:1] == ["running"]:
            return CommandState(running=True)
        if words[:1] == ["exit"] and len(words) > 1 and words[1].isdigit():
            return CommandState(exit_code=int(words[1]))
        return CommandState()

    def stop_command(self, place: SlotPlace, grace_seconds: float = 60.0) -> None:
        """SIGINT the detached command, wait for it to stop, then SIGKILL what is left."""
        if not self.signal_command(place, "INT"):
            return
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            if not self.command_state(place).running:
                return
            time.sleep(0.5)
        self.signal_command(place, "KILL")


def _pod_fields(item: Any) -> tuple[str, str | None, bool]:
    """Name, phase and whether it is being deleted, from a pod as the API's JSON has it."""
    if not isinstance(item, dict) or not isinstance(item.get("metadata"), dict):
        raise RuntimeError_("the Kubernetes API answered with something that is not a pod")
    meta = item["metadata"]
    phase = (item.get("status") or {}).get("phase")
    return str(meta.get("name") or ""), phase, meta.get("deletionTimestamp") is not None


def _stuck(item: dict[str, Any], pool: str) -> str | None:
    """Why a Pending pod's container will not start without a fix, as one line with the fix."""
    for status in (item.get("status") or {}).get("containerStatuses") or []:
        waiting = ((status or {}).get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in _STUCK_REASONS:
            image = status.get("image") or "?"
            detail = f"{reason}: {waiting.get('message') or 'no message'}"
            if reason == "CreateContainerConfigError":
                return f"its container cannot be configured ({detail}); fix the pool's spec (iacctl pool show {pool})"
            return (f"image {image} cannot be pulled ({detail}); push the image or give the pool one that "
                    f"exists (iacctl pool set {pool} --image IMAGE), and check the registry's credentials")
    return None


def new_pod_name(pool: str) -> str:
    return f"iacctl-{pool}-{secrets.token_hex(3)}"[:63]


def _exit_code(status: bytes) -> int | None:
    if not status.strip():
        return None
    try:
        doc = json.loads(status)
    except ValueError:
        return None
    if doc.get("status") == "Success":
        return 0
    for cause in (doc.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message"))
            except (TypeError, ValueError):
                break
    return 126  # the command could not be run at all (a Failure without an exit code)


def _one_file_tar(relpath: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:") as tar:
        info = tarfile.TarInfo(relpath)
        info.size = len(data)
        info.mode = 0o600
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _text(data: bytes) -> str:
    lines = data.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "no error output"
