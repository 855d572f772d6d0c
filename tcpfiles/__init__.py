"""tcpfiles: small TCP services (files, echo, chat) built on Twisted."""

__version__ = "0.1.0"
