"""The command line: one module per command group. Each command parses, calls one service and
renders. typer and rich are used here and nowhere else."""
