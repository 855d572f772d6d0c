"""A chat room across processes and hosts: the relay between a :class:`~.room.Room` and a bus.

Every process (a *node*) that names the same bus serves one room.  The room stays a plain
object; :class:`RoomBus` is its :class:`~.room.Relay`: it sends what is said and announced here
to the bus and delivers what comes from the other nodes to the users here, formatted as they
were where they were said.  Each message names its node, so a node ignores its own.

The bus (:class:`~.buscontract.Bus`; Redis in :mod:`tcpfiles.chat.redisbus`, a fake in the
tests) offers:

* nick claims: ``SET key node NX PX ttl``; the owner refreshes them while the user is here
  and deletes them when the user leaves or changes nick, so a nick is unique across nodes;
* said lines in a capped stream *and* on a channel, in one step (a script; the lines said here
  in one reactor turn together): the stream id orders them, so a node that was away reads what
  it missed (``XRANGE``) and drops what it already had; a newcomer's history is the stream's
  last lines (``XREVRANGE``).  Each line is numbered by its node, so a post that failed (and
  is posted again) is delivered once;
* notices (joins, leaves, renames), private lines (``/msg`` to a nick elsewhere) and each
  node's nicks (for ``/who``: told when they change and with each refresh, forgotten when a
  node stops telling) on the channel only.

While the bus is down the room is local: users here still talk to each other, their said lines
wait in a bounded outbox, nicks are checked here only.  When it is back, the relay re-claims
the nicks of the users here, reads what it missed, sends the outbox, and says so in the log.
A bus that stops answering (its connection still open) fails what it was asked after a few
seconds and says it is down: the same path.  At most :data:`POSTS_IN_FLIGHT` posts are
unanswered at once; the lines said meanwhile wait in the outbox.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, interfaces
from twisted.logger import Logger
from twisted.python.failure import Failure

from tcpfiles.chat.buscontract import Bus, BusListener, node_id, parse_url, stream_order
from tcpfiles.chat.outbox import Outbox
from tcpfiles.chat.room import Room
from tcpfiles.chat.roster import Roster, Seen, said_lines

__all__ = ["Bus", "BusListener", "RoomBus", "node_id", "parse_url", "stream_order"]

log = Logger(namespace="tcpfiles.chat.bus")

#: Said lines kept while the bus is down, sent when it is back (the oldest go first).
OUTBOX = 1000
#: Said lines the stream keeps at least (more if ``--chat-history`` asks): what a node that was
#: away reads back (what it missed beyond that is lost to it).
STREAM_KEEP = 1000
#: Said lines posted at most in one message (the lines said here in one reactor turn go together,
#: so that the other nodes write them to each user at once: a send per user, not per line).
BATCH = 100
#: Posts sent and not answered yet, at most (each of at most BATCH lines): the others wait in the
#: outbox, so a bus that answers slowly or not at all holds no more than this.
POSTS_IN_FLIGHT = 4


class RoomBus:
    """The relay of one room to a bus (a :class:`~.room.Relay` and a :class:`BusListener`)."""

    def __init__(
        self,
        room: Room,
        bus: Bus,
        clock: interfaces.IReactorTime,
        *,
        node: str | None = None,
        prefix: str = "tcpfiles:chat",
        ttl: float = 30.0,
        history: int = 20,
    ) -> None:
        self.room, self.bus, self.clock = room, bus, clock
        self.node = node or node_id()
        self.prefix, self.ttl, self.history = prefix, ttl, history
        self.stream = f"{prefix}:history"
        self.up = False
        self.outbox = Outbox(OUTBOX, BATCH, POSTS_IN_FLIGHT)  # (seq, payload) to post
        self._seq = 0  # numbers this node's said lines: a line posted twice is delivered once
        self._seen = Seen()  # by node: the highest seq delivered here
        self.last_id: str | None = None  # the newest stream id seen
        self._catching_up: list[str] | None = None  # messages held while reading what we missed
        self._released: set[str] = set()  # nicks to delete once the bus is back
        self._down_since: float | None = None  # since when the bus is away (None: it is here)
        self._told_down = False  # the outage is logged
        self._started = False
        self._stopping = False
        self._refresher: interfaces.IDelayedCall | None = None
        self._flushing: interfaces.IDelayedCall | None = None  # a post of the outbox, soon
        self._telling: interfaces.IDelayedCall | None = None  # the roster's, soon
        self.roster = Roster(clock.seconds, ttl)  # the other nodes' nicks
        room.relay = self

    def key(self, nick: str) -> str:
        """The bus key holding ``nick``."""
        return f"{self.prefix}:nick:{nick.lower()}"

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Connect to the bus (once the reactor runs)."""
        if not self._started:
            self._started = True
            self._down_since = self.clock.seconds()
            self.bus.start(self)
            self._refresher = self.clock.callLater(self.ttl / 3, self._refresh)

    def stop_when_empty(self) -> None:
        """Stop once the users here have left (now, if none is here)."""
        self._stopping = True
        if not self.room.members:
            self.stop()

    def stop(self) -> defer.Deferred[Any]:
        """Disconnect from the bus for good."""
        self._stopping = True
        for call in (self._refresher, self._flushing, self._telling):
            if call is not None and call.active():
                call.cancel()
        self._refresher = self._flushing = self._telling = None
        if self.up:
            self._flush()  # what was said in this last turn
            self._publish(roster=[])  # none here any more
        self.up = False
        if not self._started:
            return defer.succeed(None)
        self._started = False
        return self.bus.stop()

    # --- the room's side (Relay) -----------------------------------------------------------

    def claim(self, nick: str, joining: bool, done: Callable[[bool, list[str]], None]) -> None:
        """Claim ``nick`` on the bus (here only while it is down); a newcomer's history from
        the stream."""
        local = list(self.room.history)
        if not self.up:
            self._released.discard(nick.lower())
            done(True, local)
            return
        d = self.bus.claim(self.key(nick), self.node, self.ttl)

        def claimed(ok: bool) -> Any:
            if not (ok and joining and self.history):
                return done(ok, local)
            recent = self.bus.recent(self.stream, self.history)
            recent.addCallback(lambda entries: done(True, said_lines(entries)))
            recent.addErrback(lambda _: done(True, local))
            return None

        def failed(failure: Failure) -> None:  # the bus went away meanwhile: decide here
            log.debug("claim of {nick} failed: {f}", nick=nick, f=failure.getErrorMessage())
            done(True, local)

        d.addCallbacks(claimed, failed)

    def release(self, nick: str) -> None:
        """Delete ``nick``'s key (once the bus is back, if it is down)."""
        if self.up:
            self.bus.release(self.key(nick), self.node).addErrback(self._ignore)
        else:
            self._released.add(nick.lower())
        if self._stopping and not self.room.members:
            self.clock.callLater(0, self.stop)

    def said(self, line: str) -> None:
        """To the stream and the channel with the others said in this reactor turn; to the
        outbox while the bus is down."""
        self._seq += 1
        self.outbox.add(
            (self._seq, json.dumps({"node": self.node, "seq": self._seq, "said": line}))
        )
        if self.up and self._flushing is None:
            self._flushing = self.clock.callLater(0, self._flush)

    def announced(self, line: str) -> None:
        """To the channel (lost while the bus is down: a late join notice would mislead)."""
        if self.up:
            self._flush()  # what was said before it, first
            self._publish(notice=line)
            self._tell_roster_soon()

    def others(self) -> list[str]:
        """The nicks on the other nodes (none while the bus is down)."""
        return self.roster.nicks() if self.up else []

    def elsewhere(self, nick: str) -> str | None:
        """``nick`` as written on the node that has it, if another has it."""
        found = self.roster.find(nick) if self.up else None
        return None if found is None else found[1]

    def private(self, nick: str, line: str) -> None:
        """To the node that has ``nick`` (lost if the bus goes down meanwhile)."""
        found = self.roster.find(nick) if self.up else None
        if found is not None:
            self._publish(to=found[0], nick=nick.lower(), private=line)

    def _publish(self, **message: Any) -> None:
        self.bus.publish(json.dumps({"node": self.node, **message})).addErrback(self._ignore)

    def _tell_roster_soon(self, ask: bool = False) -> None:
        """Tell the nicks here at the end of this reactor turn (once, however many changed)."""
        if self._telling is None:
            self._telling = self.clock.callLater(0, self._tell_roster, ask)

    def _tell_roster(self, ask: bool = False) -> None:
        self._telling = None
        if self.up:
            nicks = [m.nick for m in self.room.members.values() if m.nick is not None]
            self._publish(roster=nicks, ask=ask)

    def _flush(self) -> None:
        """Post what waits, in batches, while fewer than POSTS_IN_FLIGHT are unanswered (the
        rest is posted as they are answered); what fails comes back to the outbox, for later
        (each batch is tried once here: a bus that fails at once is not asked again and again)."""
        if self._flushing is not None and self._flushing.active():
            self._flushing.cancel()
        self._flushing = None
        for _ in range(len(self.outbox) // BATCH + 1):
            batch = self.outbox.take() if self.up else None
            if batch is None:
                break
            posted = self.bus.post(
                self.stream, max(self.history, STREAM_KEEP), [p for _, p in batch]
            )
            posted.addCallbacks(self._posted, self._unsent, errbackArgs=(batch,))

    def _posted(self, _: Any) -> None:
        """A post went through: what waits behind it goes at the end of this turn."""
        self.outbox.answered()
        self._tell_dropped()
        if self.up and len(self.outbox) and self._flushing is None:
            self._flushing = self.clock.callLater(0, self._flush)

    def _unsent(self, failure: Failure, batch: list[tuple[int, str]]) -> None:
        """A post failed (the bus went away, perhaps after doing it): back to the outbox, in
        order, to be posted again; a line that did get through is dropped by its seq."""
        log.debug("chat bus: post failed: {f}", f=failure.getErrorMessage())
        self.outbox.failed(batch)

    def _tell_dropped(self) -> None:
        dropped = self.outbox.tell_dropped()
        if dropped:
            log.warn(
                "chat bus: dropped {dropped} said line(s) that waited for {where} (at most "
                "{most} wait)",
                dropped=dropped,
                where=self.bus.where,
                most=OUTBOX,
            )

    # --- the bus's side (BusListener) ----------------------------------------------------

    def bus_message(self, message: str) -> None:
        """One message: held while catching up, else each of its lines delivered unless
        already seen or ours."""
        if self._catching_up is not None:
            self._catching_up.append(message)
            return
        header, *payloads = message.split("\n")
        if header == "-":
            for payload in payloads:
                self._receive(None, payload)
            return
        ids = header.split(",")
        if len(ids) != len(payloads):
            log.warn("chat bus: ignored a message that is not ours: {m!r}", m=message[:80])
            return
        for entry_id, payload in zip(ids, payloads, strict=True):
            self._receive(entry_id, payload)

    def _receive(self, entry_id: str | None, payload: str) -> None:
        if entry_id is not None:
            if self.last_id is not None and stream_order(entry_id) <= stream_order(self.last_id):
                return  # already delivered (read while catching up)
            self.last_id = entry_id
        try:
            message = json.loads(payload)
        except ValueError:
            log.warn("chat bus: ignored a message that is not ours: {m!r}", m=payload[:80])
            return
        if not isinstance(message, dict) or message.get("node") == self.node:
            return
        if isinstance(message.get("said"), str):
            if not self._seen.again(message):
                self.room.deliver(message["said"], said=True)
        elif isinstance(message.get("notice"), str):
            self.room.deliver(message["notice"], said=False)
        elif "roster" in message:
            self.roster.heard(str(message["node"]), message["roster"])
            if message.get("ask"):
                self._tell_roster_soon()
        elif message.get("to") == self.node and isinstance(message.get("private"), str):
            target = self.room.members.get(str(message.get("nick")))
            if target is not None:
                target.send(message["private"])

    def bus_down(self, why: str) -> None:
        """Say so once per outage; the room goes on here."""
        was_up, self.up, self._catching_up = self.up, False, None
        self.roster.clear()
        if self._stopping:
            return
        if was_up:
            self._down_since = self.clock.seconds()
        if not self._told_down:
            self._told_down = True
            log.warn(
                "chat bus: {where} is unreachable ({why}); the room is local to this process "
                "until it is back",
                where=self.bus.where,
                why=why,
            )

    def bus_up(self) -> None:
        """Heal: re-claim the nicks here, read what was missed, send the outbox."""
        self.up = True
        self._catching_up = []
        self._tell_roster_soon(ask=True)  # and ask the others for theirs
        nicks = [m.nick for m in self.room.members.values() if m.nick is not None]
        claims: list[defer.Deferred[Any]] = [
            self._reclaim(nick).addErrback(lambda _: False) for nick in nicks
        ]
        for nick in self._released - {n.lower() for n in nicks}:
            self.bus.release(self.key(nick), self.node).addErrback(self._ignore)
        self._released.clear()
        first = self.last_id is None  # the first time: where the stream is, to start from
        missed: defer.Deferred[Any] = (
            self.bus.recent(self.stream, 1)
            if self.last_id is None
            else self.bus.since(self.stream, self.last_id)
        )
        missed.addErrback(lambda _: [])
        everything: defer.Deferred[list[Any]] = defer.gatherResults(
            [missed, *claims], consumeErrors=True
        )
        everything.addCallback(lambda results: self._healed(results[0], len(nicks), first))
        everything.addErrback(self._ignore)

    def _reclaim(self, nick: str) -> defer.Deferred[bool]:
        d = self.bus.reclaim(self.key(nick), self.node, self.ttl)

        def checked(ok: bool) -> bool:
            if not ok:
                log.warn("chat bus: the nick {nick} is held by another node too", nick=nick)
            return ok

        return d.addCallback(checked)

    def _healed(self, missed: list[tuple[str, str]], nicks: int, first: bool) -> None:
        """Deliver what was missed, then what came meanwhile; the first time, ``missed`` is
        the stream's last entry: where to read from after the next outage (none missed)."""
        if not self.up:
            return  # down again meanwhile
        held, self._catching_up = self._catching_up or [], None
        start = missed[-1][0] if first and missed else "0-0"
        if not first:
            for entry_id, payload in missed:
                self._receive(entry_id, payload)
        for message in held:
            self.bus_message(message)
        if first and (self.last_id is None or stream_order(start) > stream_order(self.last_id)):
            self.last_id = start
        if first:
            missed = []
        queued = len(self.outbox)
        self._flush()
        self._tell_dropped()
        if self._down_since is not None:
            log.info(
                "chat bus: {where} reached{after}; the room spans processes (re-claimed "
                "{nicks} nick(s), caught up {missed} line(s), sent {queued} queued line(s))",
                where=self.bus.where,
                after=f" after {self.clock.seconds() - self._down_since:.1f} s",
                nicks=nicks,
                missed=len(missed),
                queued=queued,
            )
        self._down_since = None
        self._told_down = False

    def _refresh(self) -> None:
        """Keep the nicks here alive on the bus (their TTL runs out if this node dies)."""
        self._refresher = self.clock.callLater(self.ttl / 3, self._refresh)
        if self.up:
            self._tell_roster_soon()
            for member in list(self.room.members.values()):
                if member.nick is not None:
                    self._reclaim(member.nick).addErrback(self._ignore)

    @staticmethod
    def _ignore(failure: Failure) -> None:
        log.debug("chat bus: {f}", f=failure.getErrorMessage())
