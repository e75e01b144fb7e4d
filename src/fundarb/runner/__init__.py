"""The strategy runner: the engine on live market data, paper or live (see loop.py)."""
