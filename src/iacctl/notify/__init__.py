"""Notification wire formats and sending (SPEC F3): HCP Terraform's generic payload, Slack
messages, signatures, and one HTTP POST per attempt. Knows nothing about the store."""
