"""The zope.interface contracts of tcpfiles."""

from zope.interface import Attribute, Interface

__all__ = ["IAccount", "IBehaviour"]


class IBehaviour(Interface):
    """A service tcpfiles can run: files (on ``--listen``), and beside it ``--serve NAME``.

    Found with ``twisted.plugin.getPlugins(IBehaviour, tcpfiles.plugins)``: a module-level
    instance in any ``tcpfiles/plugins/*.py`` on ``sys.path`` (a third-party package ships one
    such module, without ``__init__.py`` files).
    """

    name = Attribute("str: the name given to --serve (lower case, letters, digits, '-')")
    summary = Attribute("str: one line for `twistd tcpfiles --help`")
    default_endpoint = Attribute("str: e.g. 'tcp:7777'; 'udp:PORT' for a datagram behaviour")
    options = Attribute(
        "a twisted.python.usage.Options subclass with the behaviour's own settings; each "
        "appears on twistd's command line prefixed with the name (--chat-history)"
    )

    logs_in = Attribute(
        "bool, optional (False when absent): whether the behaviour logs its users in through "
        "context.portal and serves each one only what its account allows.  Under --auth, one "
        "that does not is given only the anonymous view (see tcpfiles.core.plugin.context_for)"
    )
    datagram = Attribute(
        "bool, optional (when absent: whether default_endpoint is a udp: one): whether build() "
        "returns a DatagramProtocol, listened on udp:PORT endpoints (each further endpoint gets "
        "the protocol's sibling() when it has one, else a new build), rather than a factory for "
        "stream endpoints (tcp:, ssl:, unix:...)"
    )
    uses_root = Attribute(
        "bool, optional (False when absent): whether build() reads context.root; the server "
        "then warns at start when, under --auth without --anonymous, it is given no root"
    )

    def build(options, context):  # type: ignore[no-untyped-def]
        """Make what serves the behaviour from its parsed ``options``.

        ``context`` is a :class:`tcpfiles.core.plugin.Context` (reactor, the root it may serve
        or None, whether it may write there, portal, login limiter, realm).  Return an
        ``IProtocolFactory`` for stream endpoints, or a ``DatagramProtocol`` for a ``datagram``
        behaviour.  A stream factory is served inside
        :class:`tcpfiles.core.guard.GuardedFactory`: connection limits, the idle timeout and
        draining on shutdown, from the options' ``idle-timeout``, ``max-per-peer`` and
        ``max-connections``; its protocols may have ``drain()`` and ``timed_out()``, the factory
        ``refusal_message(reason)``.
        """


class IAccount(Interface):
    """Who a connection logged in as (twisted.cred avatar interface)."""

    name = Attribute("str: the account name ('anonymous' for anonymous access)")
