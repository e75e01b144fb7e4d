"""Discrete-event simulator venue."""

from fundarb.venues.sim.exchange import SimExchange, SimVenueSpec

__all__ = ["SimExchange", "SimVenueSpec"]
