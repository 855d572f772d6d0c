"""The udp-echo behaviour: a datagram echo that refuses to be a reflector."""
