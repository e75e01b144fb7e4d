"""The pure core: no I/O, no asyncio, no wall clock, no randomness.

Everything here is a function of its inputs and of the time a `Clock` gives it,
so the simulator, the replayer and the live backend drive the same decisions.
"""
