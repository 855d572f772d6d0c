"""The files behaviour: a request/response file service and its client."""

from tcpfiles.files.factory import make_files_factory, make_files_service
from tcpfiles.files.server import FileServerFactory, Limits
from tcpfiles.tree.hashing import HashLimits

__all__ = ["FileServerFactory", "HashLimits", "Limits", "make_files_factory", "make_files_service"]
