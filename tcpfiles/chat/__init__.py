"""The chat behaviour: a room (plain object), its protocol, and the interactive client."""
