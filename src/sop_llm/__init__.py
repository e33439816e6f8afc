"""SOP LLM Service: every LLM a team uses behind one async API."""

__version__ = "0.1.0"
