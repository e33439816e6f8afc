"""Anthropic's Messages API under /v1/messages, translated onto the service's chat generation."""
