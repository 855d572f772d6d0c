"""``twistd tcpfiles``: command-line options, and the service they describe.

This module only translates options into arguments for the library classes; it opens nothing
until twistd starts the service.  Behaviours are discovered when it is imported, so that
``twistd tcpfiles --help`` can list them and their options.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.logger import Logger
from twisted.python import reflect, usage

from tcpfiles.core.fdlimit import FdLimitCheck
from tcpfiles.core.options import positive_float
from tcpfiles.core.plugin import StartWarning, blind_warning, context_for, discover
from tcpfiles.core.service import (
    DrainingService,
    ListenerService,
    ListenFailed,
    check_server_string,
)
from tcpfiles.core.tls import TLSOptions, server_endpoint
from tcpfiles.core.udp import UDPListenerService, parse_udp
from tcpfiles.files.factory import factory_for
from tcpfiles.files.plugin import FilesOptions, limits_of
from tcpfiles.files.server import Limits
from tcpfiles.tree.accounts import AccountOptions, anonymous_root, make_accounts
from tcpfiles.tree.paths import Root
from tcpfiles.tree.uploads import StaleTemporaries

log = Logger(namespace="tcpfiles.tap")

DEFAULT_LISTEN = "tcp:8888"
BEHAVIOURS = discover()


class BaseOptions(TLSOptions, AccountOptions):
    """Options of ``twistd tcpfiles`` that do not depend on which behaviours are installed
    (with the TLS and account groups of the floors that own them)."""

    synopsis = "--root DIR [--listen ENDPOINT]... [--serve NAME[=ENDPOINT]]... [options]"
    longdesc = (
        "Serve the files below DIR with the tcpfiles protocol (docs/protocol.md). "
        "Listens on tcp:8888 unless --listen says otherwise. On SIGTERM or SIGINT the "
        "listeners close first and transfers in flight get --grace seconds to finish; "
        "a second signal stops at once."
    )
    optParameters: list[list[Any]] = [
        ["root", "r", None, "Directory to serve (required)."],
        [
            "grace",
            None,
            30.0,
            "Seconds that transfers may take to finish on shutdown.",
            positive_float,
        ],
    ]
    optParameters += FilesOptions.optParameters  # files is served on every --listen
    optFlags: list[list[Any]] = list(FilesOptions.optFlags)

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["serve"] = []

    def opt_listen(self, description: str) -> None:
        """Twisted server endpoint string to serve files on; repeatable [default: tcp:8888]."""
        try:
            check_server_string(description)
        except Exception as exc:  # noqa: BLE001 - bad strings, unreadable or invalid PEM files
            raise usage.UsageError(f"--listen {description!r}: {exc}") from None
        self["listen"].append(description)

    opt_l = opt_listen

    def opt_serve(self, value: str) -> None:
        """Also serve behaviour NAME, on its default endpoint or =ENDPOINT; repeatable."""
        name, _, endpoint = value.partition("=")
        self["serve"].append((name.strip(), endpoint.strip()))

    opt_s = opt_serve

    def postOptions(self) -> None:
        """Check the root before anything listens."""
        if self["root"] is None:
            raise usage.UsageError("--root DIR is required (the directory to serve)")
        try:
            self["root"] = Root.at(self["root"])
        except NotADirectoryError:
            raise usage.UsageError(
                f"--root {self['root']!r} does not exist or is not a directory"
            ) from None
        self.check_tls()
        self.check_accounts(self["root"])
        if not self["listen"]:
            self["listen"] = [self.default_endpoint(DEFAULT_LISTEN)]
        self["serving"] = self._behaviours()

    def default_endpoint(self, description: str) -> str:
        """A default endpoint, made TLS when --tls-cert is given (UDP stays as it is)."""
        if self["tls-cert"]:
            return server_endpoint(description, self["tls-cert"], self["tls-key"])
        return description

    def _behaviours(self) -> dict[str, tuple[Any, usage.Options, list[str]]]:
        """Check --serve and each behaviour's own options; name -> (plugin, options, endpoints)."""
        serving: dict[str, tuple[Any, usage.Options, list[str]]] = {}
        for name, endpoint in self["serve"]:
            behaviour = BEHAVIOURS.get(name)
            if behaviour is None:
                known = ", ".join(BEHAVIOURS) or "none"
                raise usage.UsageError(f"--serve {name!r}: no such behaviour (known: {known})")
            endpoint = endpoint or self.default_endpoint(behaviour.default_endpoint)
            _check_endpoint(name, endpoint, behaviour.default_endpoint)
            if name not in serving:
                serving[name] = (behaviour, self._own_options(name, behaviour), [])
            serving[name][2].append(endpoint)
        for name in BEHAVIOURS:
            if name not in serving and _given(self, name):
                raise usage.UsageError(
                    f"--{_given(self, name)[0]} is given but {name} is not "
                    f"served: add --serve {name}"
                )
        return serving

    def _own_options(self, name: str, behaviour: Any) -> usage.Options:
        """Parse ``--NAME-xyz`` values with the behaviour's own Options."""
        argv = []
        for long, value in _given(self, name, with_values=True):
            argv += [f"--{long[len(name) + 1 :]}"] + ([] if value is True else [str(value)])
        options = behaviour.options()
        try:
            options.parseOptions(argv)
        except usage.UsageError as exc:
            raise usage.UsageError(f"{name}: {exc}") from None
        return options

    def getUsage(self, width: int | None = None) -> str:
        """Twisted's usage text, then the behaviours table (kept one per line)."""
        return super().getUsage(width) + "\n" + behaviour_table()

    def limits(self) -> Limits:
        """The limits these options ask for."""
        return limits_of(self)


def _check_endpoint(name: str, endpoint: str, default: str) -> None:
    """A datagram behaviour needs ``udp:``, a stream behaviour anything else that parses."""
    wants_udp = default.lower().startswith("udp:")
    try:
        if endpoint.lower().startswith("udp:"):
            if not wants_udp:
                raise ValueError(f"{name} is a stream behaviour: use a tcp: (or other) endpoint")
            parse_udp(endpoint)
        else:
            if wants_udp:
                raise ValueError(f"{name} is a datagram behaviour: use udp:PORT")
            check_server_string(endpoint)
    except Exception as exc:  # noqa: BLE001 - bad strings, unreadable or invalid PEM files
        raise usage.UsageError(f"--serve {name}={endpoint}: {exc}") from None


def _given(options: usage.Options, name: str, with_values: bool = False) -> list[Any]:
    """The ``--NAME-...`` options the user set: names, or (name, value) pairs."""
    prefix = f"{name}-"
    found = [
        (key, value)
        for key, value in options.items()
        if key.startswith(prefix)
        and key in OWN_OPTION_KEYS.get(name, ())
        and value not in (None, False)
    ]
    return found if with_values else [key for key, _ in found]


def _own_option_table() -> tuple[list[list[Any]], list[list[Any]], dict[str, set[str]]]:
    """Every behaviour's own options, prefixed with its name, for the top-level parser."""
    parameters: list[list[Any]] = []
    flags: list[list[Any]] = []
    keys: dict[str, set[str]] = {}
    for name, behaviour in BEHAVIOURS.items():
        own_parameters: list[Any] = []
        own_flags: list[Any] = []
        reflect.accumulateClassList(behaviour.options, "optParameters", own_parameters)
        reflect.accumulateClassList(behaviour.options, "optFlags", own_flags)
        for long, _short, default, doc, *_ in own_parameters:
            parameters.append(
                [f"{name}-{long}", None, None, f"[{name}] {doc} [default: {default}]"]
            )
        for long, _short, doc in own_flags:
            flags.append([f"{name}-{long}", None, f"[{name}] {doc}"])
        keys[name] = {f"{name}-{entry[0]}" for entry in own_parameters + own_flags}
    return parameters, flags, keys


def behaviour_table() -> str:
    """The installed behaviours, one per line, for ``--help``."""
    lines = ["Behaviours, for --serve NAME[=ENDPOINT] (their own options: --NAME-OPTION above):"]
    for name, behaviour in BEHAVIOURS.items():
        lines.append(f"  {name:<10} {behaviour.default_endpoint:<10} {behaviour.summary}")
    return "\n".join(lines) + "\n"


_parameters, _flags, OWN_OPTION_KEYS = _own_option_table()
Options = type(
    "Options",
    (BaseOptions,),
    {
        "optParameters": _parameters,
        "optFlags": _flags,
        "__doc__": "Options of ``twistd tcpfiles``, with every installed behaviour's own.",
    },
)


def makeService(options: BaseOptions, reactor: Any = None) -> service.IService:
    """The service twistd runs: files on every ``--listen``, each ``--serve`` beside it."""
    if reactor is None:
        from twisted.internet import reactor
    accounts = make_accounts(
        options["root"],
        reactor,
        writable=options["writable"],
        max_upload=options["max-upload"],
        checkers=options.get("credCheckers"),
        users=options["grants"],
        anonymous=options["anonymous"],
    )
    server = accounts.context(reactor)
    files = factory_for(server, options.limits())
    trackers = [files.tracker]
    top = DrainingService(trackers, options["grace"], reactor, second_signal_forces=True)
    FdLimitCheck(trackers, options["root"]).setServiceParent(top)  # first: before any bind
    if options["writable"]:
        StaleTemporaries(options["root"]).setServiceParent(top)
    for description in options["listen"]:
        ListenerService(description, files, reactor, "files").setServiceParent(top)
    anonymous = anonymous_root(accounts.portal) if accounts.portal is not None else None
    for name, (behaviour, own_options, where) in options["serving"].items():
        context = context_for(behaviour, server, anonymous)
        warning = blind_warning(behaviour, server, context)
        if warning is not None:
            StartWarning(warning).setServiceParent(top)
        built = behaviour.build(own_options, context)
        if getattr(built, "tracker", None) is not None:
            trackers.append(built.tracker)
        for index, description in enumerate(where):
            listener: service.Service
            if description.lower().startswith("udp:"):
                # A DatagramProtocol serves one port: each further UDP endpoint gets its own,
                # a sibling sharing the service's state when it can make one (udp-echo does).
                protocol = built
                if index:
                    protocol = (
                        built.sibling()
                        if hasattr(built, "sibling")
                        else behaviour.build(own_options, context)
                    )
                listener = UDPListenerService(description, protocol, reactor, name)
            else:
                listener = ListenerService(description, built, reactor, name)
            listener.setServiceParent(top)
    _warn_plain_listeners(options, top)
    if _under_twistd(options):
        bind_now(top)
    return top


def _under_twistd(options: usage.Options) -> bool:
    """Whether twistd parsed these options (as its ``tcpfiles`` subcommand)."""
    parent = getattr(options, "parent", None)
    return parent is not None and "nodaemon" in parent


def bind_now(top: service.MultiService) -> None:
    """Open every listener now, before twistd daemonizes; a failure is one line and exit 1.

    twistd would bind in ``privilegedStartService``, after it has forked into the background:
    a port in use then became a 37-line traceback in the foreground and a cut-off bytes repr
    in daemon mode.  Binding first (as servers do) reports it while stderr is still the
    operator's terminal; the listeners are inherited by the daemon, and twistd's own later call
    finds them bound.
    """
    for child in top:
        if isinstance(child, FdLimitCheck):  # the descriptor limit first, as at twistd's start
            child.privilegedStartService()
    for child in top:
        if isinstance(child, ListenerService | UDPListenerService):
            try:
                child.privilegedStartService()
            except ListenFailed as exc:
                raise SystemExit(f"twistd: {exc}") from None


def _warn_plain_listeners(options: usage.Options, top: service.MultiService) -> None:
    """With --tls-cert, say so when a TCP listener was given as plain text anyway."""
    if not options["tls-cert"]:
        return
    for child in top:
        if isinstance(child, ListenerService) and child.security() == "plain TCP":
            log.warn(
                "{label}: --tls-cert is given but {endpoint} is plain TCP: its traffic is not "
                "encrypted (use ssl:... or leave out --listen/=ENDPOINT to get TLS)",
                label=child.label,
                endpoint=child.requested,
            )
