"""fundarb: BTC funding-rate carry (long spot, short perp), simulation first."""

__version__ = "0.1.0"
