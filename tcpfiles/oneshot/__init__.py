"""The oneshot behaviour: send one file by name, the socket-tutorial way."""
