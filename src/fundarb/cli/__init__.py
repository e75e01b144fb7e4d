"""The command line (typer and rich only). Nothing in the package imports it."""
