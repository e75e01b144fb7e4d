"""Helpers with no trading knowledge: secret scrubbing, bounded waits, whole-or-absent files, sealed parquet."""
