"""Terraform by version (SPEC E10): downloaded from a mirror laid out like releases.hashicorp.com,
checked against its SHA256SUMS before anything is installed, cached per version and machine.
The mirror is a real HTTP server on 127.0.0.1 serving a real zip whose `terraform` runs the
real Terraform."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import platform
import shutil
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Env

VERSION = "1.11.4"


class Mirror:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

            def do_GET(self) -> None:
                mirror.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/terraform"

    def publish(self, version: str, *, tamper: bool = False) -> None:
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        zip_name = f"terraform_{version}_linux_{arch}.zip"
        real = shutil.which("terraform")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("terraform", f'#!/bin/sh\nexec {real} "$@"\n')
        data = buf.getvalue()
        digest = hashlib.sha256(data + (b"x" if tamper else b"")).hexdigest()
        folder = self.root / "terraform" / version
        folder.mkdir(parents=True, exist_ok=True)
        (folder / zip_name).write_bytes(data)
        (folder / f"terraform_{version}_SHA256SUMS").write_text(
            f"{'0' * 64}  terraform_{version}_darwin_arm64.zip\n{digest}  {zip_name}\n"
        )

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    m = Mirror(tmp_path / "mirror")
    yield m
    m.stop()


def _env(env: Env, mirror: Mirror) -> dict[str, str]:
    return {"IACCTL_TERRAFORM_MIRROR": mirror.url, "IACCTL_CACHE_DIR": str(env.root / "cache")}


def test_a_version_is_downloaded_verified_and_cached(env: Env, mirror: Mirror) -> None:
    mirror.publish(VERSION)
    extra = _env(env, mirror)
    env.ok("workspace", "create", "net", "--dir", str(env.config("simple")), "--terraform-version", VERSION,
           extra_env=extra)
    assert env.ok("workspace", "show", "net", "--json").json()["terraform_version"] == VERSION
    first = env.ok("plan", "net", extra_env=extra, code=2)
    assert f"downloading terraform {VERSION} from {mirror.url}/{VERSION}/" in first.out
    assert f"terraform {VERSION} verified and cached" in first.out
    assert sorted(mirror.requests) == sorted([
        f"/terraform/{VERSION}/terraform_{VERSION}_SHA256SUMS",
        f"/terraform/{VERSION}/{next(p.name for p in (mirror.root / 'terraform' / VERSION).glob('*.zip'))}",
    ])
    binary = next(p for p in (env.root / "cache").rglob("terraform") if p.is_file())
    assert binary.is_file() and os.access(binary, os.X_OK)

    env.ok("confirm-apply", "1", extra_env=extra)
    second = env.ok("plan", "net", extra_env=extra)
    assert "downloading" not in second.out
    assert len(mirror.requests) == 2  # served from the cache the second time


def test_a_checksum_mismatch_installs_nothing_and_writes_no_task(env: Env, mirror: Mirror) -> None:
    mirror.publish(VERSION, tamper=True)
    extra = _env(env, mirror)
    env.ok("workspace", "create", "net", "--dir", str(env.config("simple")), "--terraform-version", VERSION,
           extra_env=extra)
    r = env.run("plan", "net", extra_env=extra)
    assert r.code == 1
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "does not match its SHA256SUMS" in lines[0] and "nothing was installed" in lines[0]
    assert not [p for p in (env.root / "cache").rglob("terraform") if p.is_file()]
    assert env.tasks() == []


def test_a_version_the_mirror_does_not_have(env: Env, mirror: Mirror) -> None:
    extra = _env(env, mirror)
    env.ok("workspace", "create", "net", "--dir", str(env.config("simple")), "--terraform-version", "0.0.1",
           extra_env=extra)
    r = env.run("plan", "net", extra_env=extra)
    assert r.code == 1
    assert r.err.strip().splitlines() == [
        f"iacctl: cannot download {mirror.url}/0.0.1/terraform_0.0.1_SHA256SUMS: HTTP 404"
    ]
    assert env.tasks() == []


def test_binary_and_version_are_exclusive_and_versions_are_checked(env: Env) -> None:
    src = str(env.config("simple"))
    r = env.run("workspace", "create", "net", "--dir", src, "--terraform", "terraform", "--terraform-version", VERSION)
    assert r.code == 64 and "not both" in r.err
    r = env.run("workspace", "create", "net", "--dir", src, "--terraform-version", "latest")
    assert r.code == 64 and "invalid Terraform version 'latest'" in r.err
    assert env.ok("workspace", "list", "--json").json() == []
