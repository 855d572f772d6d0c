"""Reference echo servers for bench/echo.py: ``python bench/echo_servers.py asyncio|twisted PORT``.

Both are the plain, idiomatic thing: an asyncio ``Protocol`` that writes back what it gets (with
the standard pause/resume flow control), and a bare Twisted ``Protocol`` with the transport
registered as its own producer.  They listen on 127.0.0.1 only and print ``ready`` once bound.
"""

from __future__ import annotations

import sys


def run_asyncio(port: int) -> None:
    import asyncio

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[attr-defined]

        def pause_writing(self) -> None:
            self.transport.pause_reading()  # type: ignore[attr-defined]

        def resume_writing(self) -> None:
            self.transport.resume_reading()  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(
            Echo, "127.0.0.1", port, backlog=511
        )
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def run_twisted(port: int) -> None:
    from twisted.internet import protocol, reactor

    class Echo(protocol.Protocol):
        def connectionMade(self) -> None:
            self.transport.registerProducer(self.transport, True)

        def dataReceived(self, data: bytes) -> None:
            self.transport.write(data)

    factory = protocol.Factory.forProtocol(Echo)
    reactor.listenTCP(port, factory, backlog=511, interface="127.0.0.1")
    print("ready", flush=True)
    reactor.run()


if __name__ == "__main__":
    {"asyncio": run_asyncio, "twisted": run_twisted}[sys.argv[1]](int(sys.argv[2]))
