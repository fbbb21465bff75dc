"""Use cases: what a command means (plan a workspace, confirm an apply, recover pods)."""
