"""The ``tcpfiles`` twistd plugin: ``twistd -n tcpfiles --root DIR``.

Lazy: ``tcpfiles.tap`` is imported only when this plugin is used.
"""

from twisted.application.service import ServiceMaker

tcpfiles = ServiceMaker(
    "tcpfiles",
    "tcpfiles.tap",
    "Serve files (and more) over a small line protocol on tcp:8888",
    "tcpfiles",
)
