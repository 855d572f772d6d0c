"""The kernel: interfaces, plugin point, listeners, limits, draining, TLS, auth; no behaviour."""
