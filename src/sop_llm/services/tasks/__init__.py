"""Durable background tasks (R-T): the database is the source of truth for task state."""
