"""The bounds a files server enforces: the options of the tables in docs/protocol.md."""

from __future__ import annotations

from dataclasses import dataclass

from tcpfiles.files import wire
from tcpfiles.tree.producer import CHUNK_SIZE

#: Pipelined requests answered in one reactor turn before the others wait for the next turn:
#: 64 KiB of empty lines held every connection of the process for 3.5 s when taken at once.
REQUESTS_PER_TURN = 64
#: Bad requests logged per connection; the rest are counted, and the count logged at the end
#: (one client sending newlines wrote 290,000 log lines in 10 s).
BAD_REQUESTS_LOGGED = 16

#: Bodies up to this size go out in the request's own turn, with the status line (on an idle
#: plain TCP connection: ``send`` and ``sendfile``, else read whole and written): a producer,
#: setting and clearing TCP_CORK and another turn cost more (16% of the time for 64 KiB).
SMALL_BODY = 256 * 1024


@dataclass(frozen=True)
class Limits:
    """Every bound a files server enforces; the defaults are the documented ones."""

    max_line: int = wire.MAX_LINE
    line_timeout: float = 30.0
    idle_timeout: float = 300.0
    stall_timeout: float = 60.0
    max_per_peer: int = 64
    max_connections: int = 1024
    #: Unparsed input (pipelined requests) held while a response is sent, before reading stops.
    max_pending_input: int = 64 * 1024
    chunk_size: int = CHUNK_SIZE
    #: Send file bodies with os.sendfile where the transport allows it (plain TCP).
    zero_copy: bool = True
    #: Rows of one LIST answer; a longer listing ends with ``END <n> truncated``.
    max_list: int = 100_000
    #: Entries read (in the thread pool) and sent at a time by LIST: what a connection holds.
    list_batch: int = 500
    #: LIST batches being read in the thread pool at once, all connections together: the pool
    #: stays free for hashing and fsync, and the reactor shares the GIL with few threads.
    max_list_reads: int = 1
    #: Bytes per second each connection's transfers may move, either way (``--rate``); 0: no
    #: limit.  An account's own ``rate=`` (users file) applies on top, to all its connections.
    rate: int = 0
