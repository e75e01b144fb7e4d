"""Use cases, free of typer and rich: the runner (paper and live), replay of captures, promotion."""
