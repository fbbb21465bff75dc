"""Config snapshots (SPEC E7): the workspace's source directory as a reproducible tar.gz.

Files that belong to a run, not to the configuration (.terraform, state files, saved plans,
.git), are left out. Members are sorted with fixed times, so the same tree gives the same hash.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

from sqlmodel import Session

from iacctl.crypto import Cipher
from iacctl.errors import UsageError
from iacctl.store import repo
from iacctl.store.models import ConfigSnapshot

_SKIP_DIRS = {".terraform", ".git", ".iacctl"}
_SKIP_SUFFIXES = (".tfstate", ".tfstate.backup", ".tfplan")
MAX_SNAPSHOT_BYTES = 256 * 1024 * 1024


def archive_directory(source: Path) -> tuple[bytes, str]:
    """Return (tar.gz bytes, sha256 hex of them)."""
    if not source.is_dir():
        raise UsageError(f"the workspace directory {source} does not exist or is not a directory")
    buf = io.BytesIO()
    total = 0
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for path in _walk(source):
            rel = path.relative_to(source).as_posix()
            info = tar.gettarinfo(str(path), arcname=rel)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                total += info.size
                if total > MAX_SNAPSHOT_BYTES:
                    raise UsageError(f"the workspace directory {source} is larger than 256 MiB")
                try:
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                except PermissionError:
                    raise UsageError(f"cannot read {path}: permission denied") from None
            else:
                tar.addfile(info)
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def _walk(root: Path) -> list[Path]:
    found: list[Path] = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except PermissionError:
        raise UsageError(f"cannot read the directory {root}: permission denied") from None
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            if entry.name in _SKIP_DIRS:
                continue
            found.append(path)
            found.extend(_walk(path))
        elif entry.is_file(follow_symlinks=True):
            if entry.name.endswith(_SKIP_SUFFIXES) or entry.name in ("tfplan", ".terraform.tfstate.lock.info"):
                continue
            found.append(path)
    return found


def store_snapshot(session: Session, cipher: Cipher, workspace_id: int, data: bytes, digest: str) -> ConfigSnapshot:
    """Issue 18 item 1: the configuration a task is created with, stored (encrypted) with the
    task, so that whichever machine plans, re-plans or applies it uses exactly this, never its
    own checkout of the workspace's directory."""
    snapshot = ConfigSnapshot(workspace_id=workspace_id, sha256=digest, size=len(data), created_at=repo.now(),
                              data_secret=cipher.encrypt(data))
    return repo.add_config_snapshot(session, snapshot)
