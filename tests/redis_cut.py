"""A TCP proxy to the real Redis that a test can cut and restore: Redis unreachable, for real.

``cut()`` closes every proxied connection and refuses new ones (closed on accept);
``silence()`` keeps connections open but drops what either side sends, as a Redis that
stopped answering would; ``restore()`` lets traffic through again.
"""

from __future__ import annotations

import asyncio
import contextlib


class RedisCut:
    def __init__(self, host: str = "127.0.0.1", port: int = 6379) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._cut = False
        self._silent = False
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> RedisCut:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def cut(self) -> None:
        self._cut = True
        for writer in self._links:
            writer.transport.abort()
        self._links.clear()

    def silence(self) -> None:
        self._silent = True

    def restore(self) -> None:
        self._cut = self._silent = False

    async def aclose(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_writer))
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)
        self._tasks.difference_update(pipes)
        for w in (writer, up_writer):
            self._links.discard(w)
            w.transport.abort()

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                if self._cut:
                    return
                if not self._silent:
                    sink.write(data)
                    await sink.drain()
