"""Orders on real venues: one leg, the paired open and close, reconciliation, pre-trade checks."""
