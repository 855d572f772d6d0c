"""Testing behaviours and the code that embeds them: fakes and harnesses for trial and pytest.

In the spirit of ``twisted.internet.testing`` and ``treq.testing``; docs/testing.md shows each
piece in use.  Nothing here imports the global reactor: what needs one takes it as an argument.

In memory (fast, deterministic; a ``SynchronousTestCase`` is enough):

- :func:`build_guarded` builds a behaviour (an ``IBehaviour`` or an installed one's name) from
  options as the server does, behind the kernel's guard (limits, idle timeout, draining), on a
  fake clock; :func:`guarded` puts any factory behind the guard.
- :class:`Connection` connects one of its protocols to a ``StringTransport``: feed bytes whole
  or one at a time, read what was written, half-close, lose the connection, advance the clock.
  :func:`connect`, :func:`respond` and :func:`pump` are the same moves as functions;
  :class:`PausingTransport` pauses a push producer as a socket would.
- :class:`StubFiles` connects real files clients to a real files server in memory (like
  ``treq.testing.StubTreq``); :func:`files_factory` is a files server whose thread jobs run
  inline; :func:`client_pair` and :func:`settle` are the lower-level pair and wait.

For real (the real reactor, loopback sockets; a trial ``TestCase`` or an ``async def`` test):

- :func:`serve` serves behaviours through :func:`tcpfiles.compose.make_service` on free ports
  of 127.0.0.1; :meth:`Served.stop` drains and stops it (a Deferred; use it as a cleanup).
- :class:`LineClient` connects to a port, sends lines and reads them with a timeout
  (Deferreds); :class:`BlockingLineClient` is the same on a blocking socket, for a server in
  another process.

And :func:`assert_clean` / :class:`ReactorState`: no ``DelayedCall``, reader or writer left
behind by a test, for a reactor or a ``Clock``.
"""

from tcpfiles.testing.clean import ReactorState, assert_clean
from tcpfiles.testing.files import StubFiles, client_pair, files_factory, settle
from tcpfiles.testing.lines import BlockingLineClient, LineClient
from tcpfiles.testing.memory import (
    Connection,
    PausingTransport,
    build_guarded,
    connect,
    guarded,
    pump,
    respond,
)
from tcpfiles.testing.serving import LOOPBACK, Served, serve

__all__ = [
    "LOOPBACK",
    "BlockingLineClient",
    "Connection",
    "LineClient",
    "PausingTransport",
    "ReactorState",
    "Served",
    "StubFiles",
    "assert_clean",
    "build_guarded",
    "client_pair",
    "connect",
    "files_factory",
    "guarded",
    "pump",
    "respond",
    "serve",
    "settle",
]
