"""Studies over many paths: bootstrap of history, Monte Carlo, sweeps, funding statistics."""
