"""A real TCP forwarder between one replica and Redis, so a test can cut that replica off alone.

`cut()` closes every forwarded connection, and holds new ones without forwarding anything, as a
network partition that drops packets would; `mend()` forwards again, held connections included.
A replica reconnecting during the cut gets its connection only once the partition heals.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tests.redis_server import free_port


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tcp-proxy", daemon=True)
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.healed: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.thread.start()
        self._call(self._listen())

    def mend(self) -> None:
        self._call(self._mend())

    def cut(self) -> None:
        self._call(self._cut())

    def stop(self) -> None:
        self._call(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        self.healed = asyncio.Event()
        self.healed.set()
        self.server = await asyncio.start_server(self._forward, "127.0.0.1", self.port, reuse_address=True)

    async def _cut(self) -> None:
        assert self.healed is not None
        self.healed.clear()
        for writer in list(self.writers):
            writer.close()
        self.writers.clear()

    async def _mend(self) -> None:
        assert self.healed is not None
        self.healed.set()

    async def _close(self) -> None:
        await self._cut()
        if self.server is not None:
            self.server.close()

    async def _forward(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        assert self.healed is not None
        await self.healed.wait()
        try:
            target_reader, target_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        self.writers.update({client_writer, target_writer})
        await asyncio.gather(pump(client_reader, target_writer), pump(target_reader, client_writer))
        self.writers.difference_update({client_writer, target_writer})


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextmanager
def tcp_proxy(target_port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy(target_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
