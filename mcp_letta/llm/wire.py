"""``Wire``: a connection's bytes on asyncio, through a protocol rather than a stream (see ``http.py``).

A stream's receive pauses and resumes the socket's reader around every read; with 100 concurrent LLM
requests that cost twice the client's CPU. Here what arrives is buffered as it comes.
"""

from __future__ import annotations

import asyncio

import anyio


class Wire(asyncio.Protocol):
    """A connection's bytes on asyncio: what arrives is buffered as it comes, and ``receive`` takes it all.

    It has the part of a byte stream's interface ``_Connection`` uses: ``receive`` (``anyio.EndOfStream``
    once the server closed, or the connection's error), ``send`` (waits while the write buffer is full)
    and ``aclose``.
    """

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._data = bytearray()
        self._ended: BaseException | None = None
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """(asyncio) Connected."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        """(asyncio) Bytes arrived."""
        self._data += data
        self._wake(self._readable)

    def eof_received(self) -> bool:
        """(asyncio) The server closed its side: the connection is done (the transport closes it)."""
        self._end(anyio.EndOfStream())
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """(asyncio) The connection is gone, cleanly or with ``exc``."""
        self._end(anyio.EndOfStream() if exc is None else exc)

    def pause_writing(self) -> None:
        """(asyncio) The write buffer is full."""
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        """(asyncio) The write buffer drained."""
        self._wake(self._writable)
        self._writable = None

    def _end(self, error: BaseException) -> None:
        if self._ended is None:
            self._ended = error
        self._wake(self._readable)
        self._wake(self._writable)

    @staticmethod
    def _wake(waiter: asyncio.Future[None] | None) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def unsolicited(self) -> bool:
        """Whether anything happened while nobody was reading: bytes, or the server closing."""
        return bool(self._data) or self._ended is not None

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Everything buffered (``max_bytes`` is not a bound here); waits for bytes if there are none."""
        while not self._data:
            if self._ended is not None:
                raise self._ended
            self._readable = asyncio.get_running_loop().create_future()
            try:
                await self._readable
            finally:
                self._readable = None
        data = bytes(self._data)
        self._data.clear()
        return data

    async def send(self, data: bytes) -> None:
        """Write ``data``; waits while the transport's buffer is over its high-water mark."""
        if self._ended is not None or self._transport is None or self._transport.is_closing():
            raise anyio.BrokenResourceError("the connection is closed")
        self._transport.write(data)
        if self._writable is not None:
            await self._writable
            if self._ended is not None:
                raise anyio.BrokenResourceError("the connection closed while sending")

    async def aclose(self) -> None:
        """Close the connection (without waiting for the server)."""
        if self._transport is not None:
            self._transport.close()
