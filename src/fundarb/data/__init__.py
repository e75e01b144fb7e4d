"""Market history: the shipped real data, and (later) fetch and statistics."""
