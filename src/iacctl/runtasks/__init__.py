"""Run tasks compatible with HCP Terraform (SPEC R1-R8): protocol, tokens, client, callback server."""
