"""``twistd tcpfiles``: command-line options, and the service they describe.

Generic over behaviours: the root, the listeners, the accounts, TLS and the grace period are the
tap's; each behaviour's own settings are its plugin's Options, asked for here.  ``DEFAULT``
(files) is served on every ``--listen``, its options offered as they are (``--max-line``); any
other behaviour is switched on with ``--serve NAME[=ENDPOINT]``, its options prefixed with its
name (``--chat-history``).  :func:`makeService` hands the parsed options to
:func:`tcpfiles.compose.make_service`, which opens nothing until twistd starts the service.
Behaviours are discovered when this module is imported, so that ``--help`` can list them.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

from twisted.application import service
from twisted.python import reflect, usage

from tcpfiles.compose import Serve, bind_now, check_endpoint, default_endpoints, make_service
from tcpfiles.compose import parse_options as parse_own_options
from tcpfiles.core.options import positive_float, positive_int
from tcpfiles.core.plugin import discover, is_datagram
from tcpfiles.core.proxyendpoint import ProxyOptions
from tcpfiles.core.service import ListenFailed, check_server_string
from tcpfiles.core.tls import TLSOptions
from tcpfiles.core.workers import (
    WORKER_MAIN,
    Supervisor,
    adopt_listeners,
    become_worker,
    parent_service,
    tag_events,
    worker_role,
)
from tcpfiles.logs import batch_twistd_text_log
from tcpfiles.tree.accounts import AccountOptions
from tcpfiles.tree.paths import Root

__all__ = ["Options", "makeService"]

#: The behaviour served on every --listen (tcp:8888 unless told), its options unprefixed.
DEFAULT = "files"
BEHAVIOURS = discover()


class BaseOptions(TLSOptions, AccountOptions, ProxyOptions):
    """Options of ``twistd tcpfiles`` that do not depend on which behaviours are installed:
    the root, the listeners, the grace period, and the TLS and account groups of the floors
    that own them (:class:`~tcpfiles.core.tls.TLSOptions`,
    :class:`~tcpfiles.tree.accounts.AccountOptions`)."""

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
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics (/metrics) and the status (/status, for 'tcpfiles "
            "status') over HTTP on this endpoint, e.g. tcp:9100:interface=127.0.0.1; "
            "needs the 'metrics' extra (pip install 'tcpfiles[metrics]').",
        ],
        [
            "workers",
            None,
            1,
            "Processes that serve, sharing the sockets: with N > 1 this one binds the "
            "listeners and runs N workers, restarting any that dies. Connection and login limits "
            "apply per worker. Needs twistd -n and its log on standard output; not with UDP "
            "behaviours (docs/operations.md).",
            positive_int,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["serve"] = []
        self.argv: list[str] = []

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse, keeping the arguments: a worker gets the same (``--workers``)."""
        self.argv = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)  # type: ignore[no-untyped-call]

    def opt_listen(self, description: str) -> None:
        """Twisted server endpoint string to serve files on; repeatable [default: tcp:8888]."""
        try:
            check_endpoint(BEHAVIOURS[DEFAULT], description)
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
        """Check the root, TLS, accounts and behaviours before anything listens."""
        if self["root"] is None:
            raise usage.UsageError("--root DIR is required (the directory to serve)")
        try:
            self["root"] = Root.at(self["root"])
        except NotADirectoryError:
            raise usage.UsageError(
                f"--root {self['root']!r} does not exist or is not a directory"
            ) from None
        self.check_tls()
        self.check_proxy()
        self.check_accounts(self["root"])
        self._check_metrics()
        if not self["listen"]:
            self["listen"] = default_endpoints(BEHAVIOURS[DEFAULT], self.tls())
        self["serving"] = self._behaviours()
        if self["workers"] > 1:
            self._check_workers()

    def _check_workers(self) -> None:
        """What ``--workers`` cannot do, said before anything starts."""
        twistd = getattr(self, "parent", None)
        if twistd is not None and not twistd["nodaemon"]:
            raise usage.UsageError("--workers needs twistd -n (run it in the foreground)")
        if twistd is not None and twistd["logfile"] not in (None, "-"):
            raise usage.UsageError(
                "--workers: workers log to standard output, not --logfile (use the journal, "
                "or --logger tcpfiles.logs.json_logger with TCPFILES_JSON_LOG)"
            )
        self.logger = twistd["logger"] if twistd is not None else None
        self.reactor_name = twistd.get("reactor") if twistd is not None else None  # --reactor
        for name, (plugin, _own, _endpoints) in self["serving"].items():
            if is_datagram(plugin):
                raise usage.UsageError(
                    f"--workers: {name} is a datagram behaviour, served by one process: "
                    "run it in a twistd of its own"
                )

    def _check_metrics(self) -> None:
        """--metrics needs prometheus_client, and an endpoint that could listen."""
        if self["metrics"] is None:
            return
        try:
            import prometheus_client  # noqa: F401 - only whether it is installed
        except ImportError:
            raise usage.UsageError(
                "--metrics needs prometheus_client, which is not installed: "
                "pip install 'tcpfiles[metrics]'"
            ) from None
        try:
            check_server_string(self["metrics"])
        except Exception as exc:  # noqa: BLE001 - bad strings, unreadable or invalid PEM files
            raise usage.UsageError(f"--metrics {self['metrics']!r}: {exc}") from None

    def _behaviours(self) -> dict[str, tuple[Any, usage.Options, list[str]]]:
        """Check --serve and each behaviour's own options; name -> (plugin, options, endpoints)."""
        default = BEHAVIOURS[DEFAULT]
        serving = {DEFAULT: (default, self._default_options(default), self["listen"])}
        for name, endpoint in self["serve"]:
            behaviour = BEHAVIOURS.get(name)
            if name == DEFAULT:
                raise usage.UsageError(
                    f"--serve {name}: {name} is served on every --listen ENDPOINT; use --listen"
                )
            if behaviour is None:
                known = ", ".join(n for n in BEHAVIOURS if n != DEFAULT) or "none"
                raise usage.UsageError(f"--serve {name!r}: no such behaviour (known: {known})")
            endpoint = endpoint or default_endpoints(behaviour, self.tls())[0]
            try:
                check_endpoint(behaviour, endpoint)
            except Exception as exc:  # noqa: BLE001 - bad strings, unreadable or invalid PEM
                raise usage.UsageError(f"--serve {name}={endpoint}: {exc}") from None
            if name not in serving:
                serving[name] = (behaviour, self._own_options(name, behaviour), [])
            serving[name][2].append(endpoint)
        for name in BEHAVIOURS:
            if name not in serving and _given(self, name):
                raise usage.UsageError(
                    f"--{name}-{next(iter(_given(self, name)))} is given but {name} is not "
                    f"served: add --serve {name}"
                )
        return serving

    def _default_options(self, behaviour: Any) -> usage.Options:
        """The default behaviour's own Options, with the values parsed here (unprefixed)."""
        options = behaviour.options()
        options.update({key: self[key] for key in OWN_OPTION_KEYS[DEFAULT]})
        options.postOptions()
        return options

    def _own_options(self, name: str, behaviour: Any) -> usage.Options:
        """Parse ``--NAME-xyz`` values with the behaviour's own Options."""
        try:
            return parse_own_options(behaviour, _given(self, name))
        except usage.UsageError as exc:
            raise usage.UsageError(f"{name}: {exc}") from None

    def getUsage(self, width: int | None = None) -> str:
        """Twisted's usage text, then the behaviours table (kept one per line)."""
        return super().getUsage(width) + "\n" + behaviour_table()


def _given(options: usage.Options, name: str) -> dict[str, Any]:
    """The ``--NAME-...`` options the user set, by the behaviour's own names."""
    return {
        key[len(name) + 1 :]: value
        for key, value in options.items()
        if key in OWN_OPTION_KEYS.get(name, ()) and name != DEFAULT and value not in (None, 0)
    }


def _own_option_table() -> tuple[list[list[Any]], list[list[Any]], dict[str, set[str]]]:
    """Every behaviour's own options for the top-level parser: the default behaviour's as they
    are, the others' prefixed with their name (parsed later, by their own Options)."""
    parameters: list[list[Any]] = []
    flags: list[list[Any]] = []
    keys: dict[str, set[str]] = {}
    for name, behaviour in BEHAVIOURS.items():
        own_parameters: list[Any] = []
        own_flags: list[Any] = []
        reflect.accumulateClassList(behaviour.options, "optParameters", own_parameters)
        reflect.accumulateClassList(behaviour.options, "optFlags", own_flags)
        if name == DEFAULT:
            parameters += own_parameters
            flags += own_flags
            keys[name] = {entry[0] for entry in own_parameters + own_flags}
            continue
        for long, _short, default, doc, *coerce in own_parameters:
            # Parsed later by the behaviour's own Options: say here what its coercer accepts.
            accepts = getattr(coerce[0], "coerceDoc", None) if coerce else None
            text = f"[{name}] {doc} [default: {default}]" + (f". {accepts}" if accepts else "")
            parameters.append([f"{name}-{long}", None, None, text])
        for long, _short, doc in own_flags:
            flags.append([f"{name}-{long}", None, f"[{name}] {doc}"])
        keys[name] = {f"{name}-{entry[0]}" for entry in own_parameters + own_flags}
    return parameters, flags, keys


def behaviour_table() -> str:
    """The installed behaviours, one per line, for ``--help``: the default one first."""
    lines = [
        f"Behaviours: {DEFAULT} on every --listen, with its options above; the others with",
        "--serve NAME[=ENDPOINT], with their own options as --NAME-OPTION above:",
    ]
    for name in sorted(BEHAVIOURS, key=lambda name: name != DEFAULT):
        behaviour = BEHAVIOURS[name]
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
    role = worker_role(os.environ)
    top: service.MultiService = make_service(
        reactor,
        options["root"],
        [Serve(plugin, where, own) for plugin, own, where in options["serving"].values()],
        grace=options["grace"],
        tls=options.tls(),
        writable=options["writable"],
        max_upload=options["max-upload"],
        quota=options["quota"],
        checkers=options.get("credCheckers") or (),
        users=options["grants"],
        anonymous=options["anonymous"],
        second_signal_forces=True,
        metrics=_own_metrics(options, role),
        proxy=options.proxy_settings(),
    )
    if role is not None:  # started by a parent's --workers: serve its sockets
        become_worker(role.parent)
        adopt_listeners(top, role.fds)
        from twisted.logger import globalLogPublisher

        tag_events(globalLogPublisher, role.index)
    elif options["workers"] > 1:
        top = _parent(options, reactor, top)
    if _under_twistd(options):
        try:
            bind_now(top)
        except ListenFailed as exc:
            raise SystemExit(f"twistd: {exc}") from None
        batch_twistd_text_log(top, options.parent, reactor)
        # What start-up made (modules, classes, the services) lives as long as the process:
        # out of the collector's sight, its full passes stop walking it (one request per
        # connection: 417k -> 398k instructions, callgrind, docs/performance.md).
        reactor.callWhenRunning(gc.freeze)
    return top


def _own_metrics(options: BaseOptions, role: Any) -> Any:
    """What this process's make_service reports to: with ``--workers``, a worker writes to the
    parent's multi-process directory and the parent serves their sum (not a page of its own)."""
    if options["metrics"] is None or (role is None and options["workers"] == 1):
        return options["metrics"]
    if role is None:
        return None  # the parent: _parent serves the workers' sum
    from tcpfiles.prometheus import PrometheusMetrics

    return PrometheusMetrics.from_environ()


def _parent(options: BaseOptions, reactor: Any, top: service.MultiService) -> Any:
    """The parent of ``--workers``: ``top``'s listeners held for the supervised workers, and
    with ``--metrics`` the page summing what every worker writes (stopped after them)."""
    env: dict[str, str] = dict(os.environ)
    on_exit = None
    metrics = None
    if options["metrics"] is not None:
        from tcpfiles.prometheus import WorkersMetrics

        metrics = WorkersMetrics(reactor, options["metrics"])
        env.update(metrics.environment)
        on_exit = metrics.worker_died
    supervisor = Supervisor(
        reactor,
        options["workers"],
        _worker_command(options),
        None,
        env,
        options["grace"],
        on_worker_exit=on_exit,
    )
    parent = parent_service(top, supervisor)
    if metrics is not None:  # first: listening before the notifier says READY=1
        metrics.page.setServiceParent(parent)
        parent.services.insert(0, parent.services.pop())
    return parent


def _worker_command(options: BaseOptions) -> list[str]:
    """A worker's command line: this Python running twistd in the foreground, with twistd's
    ``--reactor`` and ``--logger`` as this process was given them, and the same tcpfiles
    arguments."""
    command = [sys.executable, "-c", WORKER_MAIN]
    command += ["-n", "--pidfile="]
    reactor_name = getattr(options, "reactor_name", None)
    if reactor_name:
        command += ["--reactor", reactor_name]
    logger = getattr(options, "logger", None)
    if logger:
        command += ["--logger", logger]
    return [*command, "tcpfiles", *options.argv]


def _under_twistd(options: usage.Options) -> bool:
    """Whether twistd parsed these options (as its ``tcpfiles`` subcommand)."""
    parent = getattr(options, "parent", None)
    return parent is not None and "nodaemon" in parent
