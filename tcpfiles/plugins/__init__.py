"""Drop-in package for tcpfiles behaviours (see docs/plugins.md).

Like ``twisted/plugins``, this package also spans ``tcpfiles/plugins`` in every other
``sys.path`` entry, so a third-party distribution adds a behaviour by installing one module here.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
__all__: list[str] = []
