"""Composing a server: behaviours on endpoints, over one root and one set of accounts.

:func:`make_service` builds the service that ``twistd tcpfiles`` runs, for any Twisted
program: files, chat, your own behaviour, each on its endpoints, with graceful shutdown
(``reactor`` is the one your program runs; the README's embedding section has the whole
program)::

    from tcpfiles.compose import Serve, make_service

    top = make_service(reactor, "./files", [
        Serve("files", ["tcp:8888"]),
        Serve("chat", options={"history": 50}),   # its default endpoint, tcp:9000
    ])
    top.startService()
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.run()

It opens nothing until the service starts (:func:`bind_now` opens every listener at once, to
fail early), and never uses the global reactor: the one given is the clock, the thread pool and
what listens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from twisted.application import service
from twisted.logger import Logger
from twisted.python import usage

from tcpfiles.core.fdlimit import FdLimitCheck
from tcpfiles.core.guard import ConnectionSettings, guard_stream
from tcpfiles.core.metrics import NO_METRICS, Metrics
from tcpfiles.core.notify import ReadinessService
from tcpfiles.core.plugin import (
    Context,
    StartWarning,
    blind_warning,
    context_for,
    discover,
    is_datagram,
)
from tcpfiles.core.proxy import DEFAULT_SETTINGS, ProxySettings
from tcpfiles.core.service import DrainingService, ListenerService, check_server_string
from tcpfiles.core.tls import check_pair, server_endpoint
from tcpfiles.core.udp import UDPListenerService, is_udp, parse_udp
from tcpfiles.tree.accounts import (
    DEFAULT_MAX_UPLOAD,
    Grant,
    Users,
    anonymous_root,
    make_accounts,
    parse_users,
)
from tcpfiles.tree.paths import Root
from tcpfiles.tree.sweep import StaleTemporaries

__all__ = [
    "Serve",
    "bind_now",
    "check_endpoint",
    "default_endpoints",
    "find",
    "make_service",
    "parse_options",
    "serve_stream",
]

log = Logger(namespace="tcpfiles.tap")


@dataclass(frozen=True)
class Serve:
    """One behaviour to serve, and where.

    ``behaviour``: an installed behaviour's name (``"files"``, ``"chat"``) or any
    :class:`~tcpfiles.core.interfaces.IBehaviour` provider (yours need not be installed).
    ``endpoints``: Twisted server endpoint strings; None for its default endpoint (made TLS by
    ``make_service(tls=...)``), ``[]`` for none (built, not listened on).  ``options``: its own
    settings, as parsed Options or a mapping of option names to values (``{"history": 50}``,
    ``{"no-sendfile": True}``), parsed by its Options class: coerced and checked as on the
    command line; leave it out for the defaults.
    """

    behaviour: Any
    endpoints: Sequence[str] | None = None
    options: usage.Options | Mapping[str, Any] | None = None


def make_service(
    reactor: Any,
    root: str | Root,
    serving: Iterable[Serve | str | Any],
    *,
    grace: float = 30.0,
    tls: tuple[str, str] | None = None,
    writable: bool = False,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    checkers: Sequence[Any] = (),
    users: Users | Mapping[str, Grant] | str | None = None,
    anonymous: bool = False,
    second_signal_forces: bool = False,
    metrics: str | Metrics | None = None,
    quota: int = 0,
    proxy: ProxySettings = DEFAULT_SETTINGS,
) -> DrainingService:
    """The service that serves each of ``serving`` over ``root``: what ``twistd tcpfiles`` runs.

    ``serving``: :class:`Serve` entries (a bare name or behaviour: its defaults).  ``grace``:
    seconds connections may take to finish on stop before they are dropped.  ``tls``: a
    (certificate, key) pair of PEM files that makes every *default* endpoint TLS.  Accounts,
    shared by every behaviour (see :func:`tcpfiles.tree.accounts.make_accounts`):
    ``writable``, ``max_upload`` and ``quota`` (bytes each account may store; 0: no limit) for
    uploads; ``checkers`` (twisted.cred) to require logins;
    ``users``, a users file (parsed, or its path) giving accounts their own roots; ``anonymous``
    to let anyone read without one.  ``second_signal_forces``: a second SIGINT/SIGTERM while
    draining drops the rest (for a process that owns its signals).  ``proxy``: which balancers
    ``haproxy:`` endpoints trust, and their header deadline (docs/operations.md).  ValueError
    for anything that cannot be served (``NotADirectoryError`` for the root, OSError for a
    users file that cannot be read, what OpenSSL raises for TLS files); nothing is opened.
    Under a service manager that asks for it (``$NOTIFY_SOCKET``: systemd's ``Type=notify``),
    a last child, :class:`~tcpfiles.core.notify.ReadinessService`, tells it when the server is
    ready, alive and stopping.  ``metrics``: an endpoint string to serve Prometheus metrics
    and the status on over HTTP (``/metrics``, ``/status``: :mod:`tcpfiles.prometheus`, which
    needs ``prometheus_client``), or a :class:`~tcpfiles.core.metrics.Metrics` to report to (a
    worker's :class:`~tcpfiles.prometheus.PrometheusMetrics` in multi-process mode, whose page
    another process serves); None for none.
    """
    root = root if isinstance(root, Root) else Root.at(root)
    if tls is not None:
        check_pair(*tls)
    plans = [_plan(entry, tls) for entry in serving]
    if isinstance(users, str):
        users = parse_users(users, root)
    accounts = make_accounts(
        root,
        reactor,
        writable=writable,
        checkers=checkers,
        users=users,
        anonymous=anonymous,
        max_upload=max_upload,
        quota=quota,
    )
    top = DrainingService([], grace, reactor, second_signal_forces)
    _adopt(top, FdLimitCheck(top.trackers, root))  # first: before any bind
    if writable:
        _adopt(top, StaleTemporaries(root))
    recorder = _metrics(top, metrics, accounts)
    server = replace(accounts.context(reactor), metrics=recorder)
    view = None if accounts.portal is None else anonymous_root(accounts.portal)
    for behaviour, options, endpoints in plans:
        _serve(top, behaviour, options, endpoints, server, view, proxy)
    _last(top, metrics if isinstance(metrics, str) else None, recorder, tls)
    return top


def _last(top: DrainingService, page: str | None, recorder: Metrics, tls: Any) -> None:
    """After the behaviours: the metrics page on ``page`` (an endpoint) if asked for, the
    warning about plain listeners under TLS, and the readiness notifier last of all (READY=1
    once every listener is up), when a service manager asks for one (``$NOTIFY_SOCKET``)."""
    if page is not None:
        from tcpfiles.prometheus import MetricsService

        _adopt(top, MetricsService(page, recorder, top.reactor, top.trackers))  # type: ignore[arg-type]
    if tls is not None:
        _warn_plain_listeners(top)
    readiness = ReadinessService.from_environ(top.reactor)  # None unless $NOTIFY_SOCKET is set
    if readiness is not None:
        readiness.setServiceParent(top)  # type: ignore[no-untyped-call]


def _serve(
    top: DrainingService,
    behaviour: Any,
    options: usage.Options,
    endpoints: Sequence[str],
    server: Context,
    anonymous_view: Any,
    proxy: ProxySettings,
) -> None:
    """Build one behaviour with the context it may have, and listen on its endpoints."""
    context = context_for(behaviour, server, anonymous_view)
    warning = blind_warning(behaviour, server, context)
    if warning is not None:
        _adopt(top, StartWarning(warning))
    built = behaviour.build(options, context)
    if is_datagram(behaviour):
        _serve_datagrams(top, behaviour, options, context, built, endpoints)
    else:
        guarded = serve_stream(top, built, options, endpoints, behaviour.name, proxy)
        tracker = getattr(guarded, "tracker", None)
        if tracker is not None:
            context.metrics.track(behaviour.name, tracker)


def serve_stream(
    top: DrainingService,
    factory: Any,
    options: usage.Options,
    endpoints: Sequence[str],
    label: str,
    proxy: ProxySettings = DEFAULT_SETTINGS,
) -> Any:
    """Hand one built stream factory, made with ``options``, to a listener on each endpoint:
    the one place where a behaviour's factory meets the network.  It is served behind the
    kernel's guard (its ``idle-timeout``, ``max-per-peer``, ``max-connections`` options), whose
    tracker is drained when ``top`` stops; ``haproxy:`` endpoints read PROXY headers first, as
    ``proxy`` says.  Returns the guarded factory."""
    settings = ConnectionSettings.from_options(options)
    factory = guard_stream(factory, settings, top.reactor, top.trackers)
    for description in endpoints:
        _adopt(top, ListenerService(description, factory, top.reactor, label, proxy))
    return factory


def _metrics(top: DrainingService, metrics: str | Metrics | None, accounts: Any) -> Metrics:
    """The recorder behaviours report to, with what the whole server reports: uploads in
    flight, files being hashed, failed logins.  A recorder that samples its readings into a
    multi-process directory is given a service that does (while ``top`` runs)."""
    if metrics is None:
        return NO_METRICS
    if isinstance(metrics, str):
        from tcpfiles.prometheus import PrometheusMetrics

        metrics = PrometheusMetrics()
    realm, limiter = accounts.realm, accounts.limiter
    metrics.collect(
        "tcpfiles_uploads_in_flight",
        "Uploads begun and not yet stored or given up.",
        realm.uploads_in_flight,
    )
    metrics.collect(
        "tcpfiles_hash_queue",
        "Files being hashed for STAT (queued or running).",
        lambda: realm.hasher.in_flight,
    )
    metrics.collect(
        "tcpfiles_login_failures_total",
        "Failed logins, every behaviour's.",
        lambda: limiter.failures,
        kind="counter",
    )
    if getattr(metrics, "multiprocess", False):
        _adopt(top, metrics.sampling(top.reactor))  # type: ignore[attr-defined]
    return metrics


def _serve_datagrams(
    top: DrainingService,
    behaviour: Any,
    options: usage.Options,
    context: Any,
    built: Any,
    endpoints: Sequence[str],
) -> None:
    """A DatagramProtocol serves one port: each further endpoint gets its own, a sibling
    sharing the behaviour's state when it can make one (udp-echo does), else a new build."""
    tracker = getattr(built, "tracker", None)
    if tracker is not None:
        top.trackers.append(tracker)
        context.metrics.track(behaviour.name, tracker)
    for index, description in enumerate(endpoints):
        protocol = built
        if index:
            sibling = getattr(built, "sibling", None)
            protocol = sibling() if sibling is not None else behaviour.build(options, context)
        _adopt(top, UDPListenerService(description, protocol, top.reactor, behaviour.name))


def _plan(entry: Serve | str | Any, tls: tuple[str, str] | None) -> tuple[Any, Any, list[str]]:
    """(behaviour, parsed options, endpoints) for one entry; ValueError when it cannot be."""
    if not isinstance(entry, Serve):
        entry = Serve(entry)
    behaviour = find(entry.behaviour) if isinstance(entry.behaviour, str) else entry.behaviour
    name = behaviour.name
    endpoints = default_endpoints(behaviour, tls) if entry.endpoints is None else entry.endpoints
    for description in endpoints:
        check_endpoint(behaviour, description)
    options = entry.options
    if not isinstance(options, usage.Options):
        try:
            options = parse_options(behaviour, options or {})
        except usage.UsageError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return behaviour, options, list(endpoints)


def find(name: str) -> Any:
    """The installed behaviour called ``name``; ValueError naming the known ones."""
    installed = discover()
    if name not in installed:
        raise ValueError(f"no such behaviour {name!r} (known: {', '.join(installed) or 'none'})")
    return installed[name]


def parse_options(behaviour: Any, values: Mapping[str, Any]) -> usage.Options:
    """``behaviour``'s Options, parsed from ``{option: value}`` as from its command line:
    flags are on when their value is true; usage.UsageError for what its Options refuse."""
    options: usage.Options = behaviour.options()
    flags = {name for name in options.longOpt if not name.endswith("=")}
    argv = []
    for key, value in values.items():
        if key in flags:
            argv += [f"--{key}"] if value else []
        elif value is not None:
            argv.append(f"--{key}={value}")
    options.parseOptions(argv)  # type: ignore[no-untyped-call]
    return options


def default_endpoints(behaviour: Any, tls: tuple[str, str] | None) -> list[str]:
    """Where ``behaviour`` listens unless told: its default endpoint, TLS when ``tls`` is
    given and it is a stream behaviour."""
    description = behaviour.default_endpoint
    if tls is not None and not is_datagram(behaviour):
        description = server_endpoint(description, *tls)
    return [description]


def check_endpoint(behaviour: Any, description: str) -> None:
    """Raise unless ``description`` is an endpoint of ``behaviour``'s kind that could listen
    (ValueError for the wrong kind or a bad ``udp:`` string; bad stream strings and unreadable
    TLS files raise what Twisted raises).  Nothing is opened."""
    name = getattr(behaviour, "name", "?")
    if is_datagram(behaviour):
        if not is_udp(description):
            raise ValueError(f"{name} is a datagram behaviour: use udp:PORT")
        parse_udp(description)
    elif is_udp(description):
        raise ValueError(f"{name} is a stream behaviour: use a tcp: (or other) endpoint")
    else:
        check_server_string(description)


def bind_now(top: service.MultiService) -> None:
    """Open every listener of ``top`` now, after the descriptor check, as starting it would;
    :class:`~tcpfiles.core.service.ListenFailed` (one line) for the first that cannot.

    twistd would bind in ``privilegedStartService``, after it has forked into the background:
    binding first reports a port in use while stderr is still the operator's terminal; the
    listeners are inherited by the daemon, and twistd's own later call finds them bound.
    """
    for child in top:
        if isinstance(child, FdLimitCheck):  # the descriptor limit first, as at start
            child.privilegedStartService()
    for child in top:
        if isinstance(child, ListenerService | UDPListenerService):
            child.privilegedStartService()


def _warn_plain_listeners(top: service.MultiService) -> None:
    """With TLS asked for, say so when a TCP listener was given as plain text anyway."""
    for child in top:
        plain = isinstance(child, ListenerService) and child.security().endswith("plain TCP")
        if plain and child.label != "metrics":  # HTTP for a scraper, on the operator's network
            log.warn(
                "{label}: --tls-cert is given but {endpoint} is plain TCP: its traffic is not "
                "encrypted (use ssl:... or leave out --listen/=ENDPOINT to get TLS)",
                label=child.label,
                endpoint=child.requested,
            )


def _adopt(parent: service.MultiService, child: service.Service) -> None:
    """``child.setServiceParent(parent)``, called on Twisted's own (unannotated) Service: the
    name pyproject.toml's ``untyped_calls_exclude`` knows, rather than our subclasses'."""
    child.setServiceParent(parent)
