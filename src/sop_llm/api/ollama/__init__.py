"""Ollama's API at its usual paths (`/api/tags`, `/api/chat`, `/api/embed`, …), translated onto the service's chat
generation and embeddings, so Ollama's clients work with every model the service serves."""
