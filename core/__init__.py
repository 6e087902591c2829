"""Foundations shared by every layer: settings, errors, ids, Redis, tracing."""
