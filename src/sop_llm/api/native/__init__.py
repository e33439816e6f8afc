"""The native API under /api/v1 (from the seed document)."""
