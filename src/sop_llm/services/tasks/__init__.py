"""Durable background tasks: the database is the source of truth for task state."""
