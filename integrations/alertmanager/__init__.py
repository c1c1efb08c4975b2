"""Prometheus Alertmanager: webhook payload parsing (``webhook``) and the API v2 client (``api``)."""
