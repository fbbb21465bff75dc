"""Terraform binaries by version (SPEC E10, the seeds' EnsureTerraformBinary).

A workspace may ask for a Terraform (or OpenTofu) version instead of a binary. It is downloaded
once per machine from a mirror laid out like releases.hashicorp.com
(`{mirror}/{version}/{product}_{version}_{os}_{arch}.zip` and `..._SHA256SUMS`), checked against
the SHA256SUMS file before anything is unpacked, and cached per version. Two processes asking
for the same version at once download it once (a file lock), and a half-written binary is
never seen (written beside, then renamed).
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

from iacctl.errors import TerraformError, UsageError
from iacctl.filelock import exclusive

DEFAULT_MIRROR = "https://releases.hashicorp.com/terraform"
_VERSION = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.]+)?$")
_MAX_ZIP_BYTES = 512 * 1024 * 1024


def check_version(version: str) -> str:
    if not _VERSION.match(version):
        raise UsageError(f"invalid Terraform version {version!r}: use a release number such as 1.11.4")
    return version


def _platform() -> str:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    return f"{platform.system().lower()}_{arch}"


def mirror() -> str:
    return os.environ.get("IACCTL_TERRAFORM_MIRROR", DEFAULT_MIRROR).rstrip("/")


def product() -> str:
    return os.environ.get("IACCTL_TERRAFORM_PRODUCT", "terraform")


def cache_dir() -> Path:
    explicit = os.environ.get("IACCTL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    import platformdirs

    return Path(platformdirs.user_cache_dir("iacctl", appauthor=False))


def cached_binary(version: str) -> Path:
    name = product()
    return cache_dir() / "binaries" / name / version / _platform() / name


def ensure_version(version: str, note: Callable[[str], None] = lambda _: None) -> str:
    """The path of the binary of this version, downloading and verifying it if it is not cached."""
    check_version(version)
    target = cached_binary(version)
    if target.is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(target.parent / ".lock"):
        if target.is_file():  # another process finished it while we waited
            return str(target)
        name = product()
        zip_name = f"{name}_{version}_{_platform()}.zip"
        base = f"{mirror()}/{version}"
        note(f"downloading {name} {version} from {base}/{zip_name}")
        sums = _fetch(f"{base}/{name}_{version}_SHA256SUMS").decode("utf-8", "replace")
        expected = _expected_sum(sums, zip_name)
        data = _fetch(f"{base}/{zip_name}")
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise TerraformError(
                f"{zip_name} from {base} does not match its SHA256SUMS (got {actual[:16]}, "
                f"expected {expected[:16]}); nothing was installed"
            )
        binary = _unzip_binary(data, name, zip_name)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(binary)
        partial.chmod(0o755)
        partial.replace(target)
        note(f"{name} {version} verified and cached at {target}")
    return str(target)


def _expected_sum(sums: str, zip_name: str) -> str:
    for line in sums.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == zip_name and re.fullmatch(r"[0-9a-f]{64}", parts[0]):
            return parts[0]
    raise TerraformError(f"the SHA256SUMS file has no checksum for {zip_name}")


def _unzip_binary(data: bytes, name: str, zip_name: str) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                if Path(member).name == name:
                    return archive.read(member)
    except zipfile.BadZipFile:
        raise TerraformError(f"{zip_name} is not a zip archive") from None
    raise TerraformError(f"{zip_name} holds no {name} binary")


def _fetch(url: str) -> bytes:
    import httpx

    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=60.0) as response:
            if response.status_code != 200:
                raise TerraformError(f"cannot download {url}: HTTP {response.status_code}")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > _MAX_ZIP_BYTES:
                    raise TerraformError(f"{url} is larger than 512 MiB")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise TerraformError(f"cannot download {url}: {exc}") from None
