"""Infrastructure: settings, configuration files, logging, errors, cache, trace context."""
