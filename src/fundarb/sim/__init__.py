"""Discrete-event simulator venue."""

from fundarb.sim.exchange import SimExchange, SimVenueSpec

__all__ = ["SimExchange", "SimVenueSpec"]
