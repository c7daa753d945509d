"""Lookout for Vision style projects, model versions and packaging jobs, kept in a local SQLite store."""
