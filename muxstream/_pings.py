"""Pings and the session's timers: our PINGs' deadlines, keepalive, idle timeout."""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Protocol

import trio
from trio.lowlevel import ParkingLot

from ._errors import KeepaliveTimeout, PingTimeout

logger = logging.getLogger("muxstream")


class PingTracker:
    """Our PINGs in flight: when each was sent, who waits for it, its deadline.

    Deadlines are enforced by one task (:meth:`watch`) rather than a cancel
    scope per ping (~20 us each here: a tenth of a round trip).
    """

    __slots__ = ("deadlines", "last_rtt", "received", "rtts", "sent", "waiters",
                 "watch_lot", "watch_until")

    def __init__(self) -> None:
        #: ping id -> (when sent, set when answered, timed out or the session ended)
        self.waiters: dict[int, tuple[float, trio.Event]] = {}
        #: (deadline, ping id), in send order
        self.deadlines: deque[tuple[float, int]] = deque()
        self.watch_until = math.inf
        self.watch_lot = ParkingLot()
        self.rtts: dict[int, float] = {}  # answered, not yet collected by its waiter
        self.sent = 0
        self.received = 0
        self.last_rtt: float | None = None

    def __len__(self) -> int:
        return len(self.waiters)

    def start(self, ping_id: int, timeout: float) -> trio.Event:
        """Track a PING just queued; the event is set when it is settled."""
        now = trio.current_time()
        event = trio.Event()
        self.waiters[ping_id] = (now, event)
        self.sent += 1
        deadline = now + timeout
        pending = self.deadlines
        while pending and pending[0][1] not in self.waiters:
            pending.popleft()  # answered long ago
        pending.append((deadline, ping_id))
        if deadline < self.watch_until:
            self.watch_lot.unpark_all()
        return event

    def finish(self, ping_id: int) -> float | None:
        """Forget ``ping_id``; its round-trip time, or None if it went unanswered."""
        self.waiters.pop(ping_id, None)
        return self.rtts.pop(ping_id, None)

    def acked(self, ping_id: int) -> None:
        """The peer echoed ``ping_id``."""
        waiter = self.waiters.get(ping_id)
        if waiter is not None:
            rtt = trio.current_time() - waiter[0]
            self.rtts[ping_id] = rtt
            self.last_rtt = rtt
            waiter[1].set()

    def wake_all(self) -> None:
        """The session ended or the peer can no longer answer: settle every ping."""
        for _start, event in self.waiters.values():
            event.set()

    async def watch(self) -> None:
        """Wake each ping whose deadline passed (it then raises PingTimeout).

        Sleeps until the earliest deadline of a ping still unanswered; a new ping
        wakes it only if its deadline is earlier still, so back-to-back pings
        cost no wake-up here at all.
        """
        pending = self.deadlines
        pings = self.waiters
        while True:
            now = trio.current_time()
            earliest = math.inf
            for deadline, pid in list(pending):
                if pid not in pings:
                    continue
                if deadline <= now:
                    pings[pid][1].set()
                elif deadline < earliest:
                    earliest = deadline
            while pending and (pending[0][1] not in pings or pending[0][0] <= now):
                pending.popleft()
            self.watch_until = earliest
            with trio.move_on_at(earliest):
                await self.watch_lot.park()


class TimerHost(Protocol):
    """What the keepalive and idle timers need of the session (its core)."""

    @property
    def closing(self) -> bool:
        """A close has begun: the timers stop."""
        ...

    @property
    def idle(self) -> bool:
        """No stream is open or waiting for accept()."""
        ...

    last_activity: float

    async def ping(self, timeout: float | None = None) -> float: ...

    def fail(self, exc: BaseException) -> None: ...

    def close_when_idle(self) -> None: ...


async def keepalive(host: TimerHost, interval: float, ping_timeout: float) -> None:
    """PING every ``interval`` s; an unanswered one fails the session."""
    while not host.closing:
        await trio.sleep(interval)
        if host.closing:
            return
        try:
            await host.ping()
        except PingTimeout:
            host.fail(KeepaliveTimeout(f"keepalive PING unanswered for {ping_timeout} s"))
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


async def idle_watch(host: TimerHost, idle: float) -> None:
    """Close gracefully once nothing happened for ``idle`` s with no stream left."""
    while not host.closing:
        deadline = host.last_activity + idle
        if trio.current_time() >= deadline:
            if host.idle:
                logger.debug("idle for %s s; closing", idle)
                host.close_when_idle()
                return
            host.last_activity = trio.current_time()
            continue
        await trio.sleep_until(deadline)

