"""HTTP surfaces: the native API (/api/v1) and the OpenAI-compatible API (/v1)."""
