"""Datadog: monitor webhook parsing (``webhook``)."""
