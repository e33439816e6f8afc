"""The OpenAI-compatible API under /v1 (see shared OPENAI_COMPAT.md)."""
