"""Providers: one module per provider, each registered with `@register_provider("name")`.

Modules here import only light code at import time; heavy libraries (llama_cpp, torch, SDKs) are imported
inside the provider when a configured model is loaded.
"""
