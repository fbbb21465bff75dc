"""The executor: runs a task's stages with real Terraform in a slot, through a Runtime."""
