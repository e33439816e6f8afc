"""Continuous batching for llama.cpp: one context, `parallel` sequence slots, one `llama_decode` per step."""
