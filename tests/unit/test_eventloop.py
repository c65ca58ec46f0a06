"""libvirt's events run on the asyncio loop (adapter/eventloop.py): a socket libvirt watches is
read in the loop's turn, unread input is known to a scrape that should wait for it, and an
event queued by a call in another thread wakes the loop."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import uuid
from typing import Any

import libvirt
import pytest

from poolwatch.adapter.connection import LibvirtSource
from poolwatch.adapter.eventloop import ensure_event_loop


async def test_a_watched_socket_with_unread_input_is_waited_for_then_read_on_the_loop() -> None:
    """What a scrape waits for (web/settle.py, through ``events_on_the_way``): a message
    libvirtd sent that the loop has not read yet."""
    events = ensure_event_loop()
    source = LibvirtSource(uri="test:///default", read_only=True, call_timeout=10)
    await source.start()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    read: list[tuple[bytes, int]] = []
    got = asyncio.Event()

    def on_readable(_watch: int, _fd: int, _event: int, _opaque: Any) -> None:
        read.append((ours.recv(100), threading.get_ident()))
        got.set()

    watch = libvirt.virEventAddHandle(
        ours.fileno(), libvirt.VIR_EVENT_HANDLE_READABLE, on_readable, None
    )
    try:
        assert not events.input_waiting()
        theirs.send(b"event")
        assert events.input_waiting()  # libvirtd sent it, the loop has not read it yet
        assert source.events_on_the_way()
        await asyncio.wait_for(got.wait(), 5)
        assert read == [(b"event", threading.get_ident())]  # read on the loop's thread
        assert not events.input_waiting()
        assert not source.events_on_the_way()
    finally:
        await source.close()
        assert libvirt.virEventRemoveHandle(watch) == 0
        await asyncio.sleep(0)  # its opaque is freed in a turn of the loop
        theirs.send(b"after")
        await asyncio.sleep(0.05)
        assert len(read) == 1  # no longer watched
        assert not events.input_waiting()
        ours.close()
        theirs.close()


async def test_an_event_queued_by_a_call_in_another_thread_wakes_the_loop() -> None:
    """A call made in a thread of its own (the connection's worker) queues the event it causes
    from there; the loop, idle meanwhile, must be woken to dispatch it (libvirtaio did not:
    the event waited for the loop's next timer)."""
    ensure_event_loop()
    conn = libvirt.open("test:///default")
    name = f"eventloop-{uuid.uuid4().hex[:8]}"
    loop_thread = threading.get_ident()
    seen: list[tuple[str, int, int]] = []
    stopped = asyncio.Event()

    def lifecycle(_conn: Any, pool: Any, event: int, _detail: int, _opaque: Any) -> None:
        if pool.name() == name:
            seen.append((pool.name(), event, threading.get_ident()))
            if event == libvirt.VIR_STORAGE_POOL_EVENT_STOPPED:
                stopped.set()

    callback = conn.storagePoolEventRegisterAny(
        None, libvirt.VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE, lifecycle, None
    )
    try:
        pool = conn.storagePoolCreateXML(
            f"<pool type='dir'><name>{name}</name><target><path>/{name}</path></target></pool>",
            0,
        )
        # Once the loop sleeps in wait_for: the call's end is not awaited, nothing else wakes it.
        caller = threading.Timer(0.05, pool.destroy)
        caller.start()
        await asyncio.wait_for(stopped.wait(), 2)
        caller.join()
        assert seen == [
            (name, libvirt.VIR_STORAGE_POOL_EVENT_STARTED, loop_thread),
            (name, libvirt.VIR_STORAGE_POOL_EVENT_STOPPED, loop_thread),
        ]
    finally:
        conn.storagePoolEventDeregisterAny(callback)
        conn.close()


@pytest.mark.parametrize("old_events", ["the same", "more"])
async def test_a_new_file_under_the_number_of_a_closed_watched_one_is_watched(
    old_events: str,
) -> None:
    """libvirt may close a socket before it removes its watch; the kernel then drops the file
    from the epoll set, and the next socket it opens often gets the same number. A watch on
    that new socket must be read, whether or not the old watch asked for the same events."""
    ensure_event_loop()
    old, old_peer = socket.socketpair()
    new, new_peer = socket.socketpair()
    fd = old.fileno()
    fired: list[str] = []
    got = asyncio.Event()

    def on_old(_watch: int, _fd: int, _event: int, _opaque: Any) -> None:
        pass  # called on the number's events too, as libvirt's stale watch would be

    def on_new(_watch: int, _fd: int, event: int, _opaque: Any) -> None:
        # Called with the events any watch of the number asked for (the old one's too).
        if event & libvirt.VIR_EVENT_HANDLE_READABLE:
            fired.append(os.read(fd, 100).decode())
            got.set()

    events = libvirt.VIR_EVENT_HANDLE_READABLE
    if old_events == "more":
        events |= libvirt.VIR_EVENT_HANDLE_WRITABLE
    stale = libvirt.virEventAddHandle(fd, events, on_old, None)
    watch = -1
    try:
        old.detach()
        os.close(fd)  # the old socket's file is gone, its watch is not (yet)
        os.dup2(new.fileno(), fd)  # the number's next file
        new.close()
        watch = libvirt.virEventAddHandle(fd, libvirt.VIR_EVENT_HANDLE_READABLE, on_new, None)
        new_peer.send(b"event")
        await asyncio.wait_for(got.wait(), 2)
        assert fired == ["event"]
    finally:
        assert libvirt.virEventRemoveHandle(stale) == 0
        if watch != -1:
            assert libvirt.virEventRemoveHandle(watch) == 0
        await asyncio.sleep(0)  # their opaques are freed in a turn of the loop
        os.close(fd)
        old_peer.close()
        new_peer.close()
