"""What Terraform sees of the caller's environment (issue 9, SPEC E9): the workspace's variables
and this allowlist, nothing else. A `TF_VAR_x` or `TF_CLI_ARGS` left in someone's shell must
not change what a workspace plans; what a workspace needs goes on the workspace
(`iacctl workspace var set NAME KEY VALUE --env`). Pure."""

from __future__ import annotations

from collections.abc import Mapping

# Names passed through as they are: finding programs and files, locale and time, proxies and
# certificates (a network's, not a workspace's), the plugin cache, and Terraform's CLI
# configuration file (provider mirrors: the machine's, like the proxy).
ALLOWED = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "TZ", "LANG", "LANGUAGE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
    "TF_PLUGIN_CACHE_DIR", "TF_PLUGIN_CACHE_MAY_BREAK_DEPENDENCY_LOCK_FILE", "TF_CLI_CONFIG_FILE",
    "TERRAFORM_CONFIG",
)
ALLOWED_PREFIXES = ("LC_",)


def allowed(name: str) -> bool:
    return name in ALLOWED or name.startswith(ALLOWED_PREFIXES)


def caller_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of the caller's environment Terraform gets."""
    return {k: v for k, v in environ.items() if allowed(k)}
