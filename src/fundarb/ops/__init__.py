"""Operating a desk: alerts and the monitor dashboard."""
