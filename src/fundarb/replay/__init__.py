"""Recorded cryptofeed captures: parse them into market events, and record new ones."""
