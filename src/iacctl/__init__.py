"""iacctl: run Terraform and OpenTofu changes safely (plan, review, confirm, apply the saved plan)."""

__version__ = "0.1.0"
