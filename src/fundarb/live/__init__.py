"""The live backend: real venues through ccxt (REST, and ccxt.pro websockets
where the venue has them), a rate-limit-aware request queue per venue, the
durable SQLite journal and trade log, paired execution of the two legs, and
reconciliation of the journal with what the venues say."""
