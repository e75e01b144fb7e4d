"""The venues through ccxt: one client per venue, its rate-limited request queue, the feeds, credentials."""
