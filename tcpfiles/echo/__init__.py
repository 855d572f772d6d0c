"""The echo and upper behaviours: protocol, client, plugin."""
