"""Pings and the session's timer task: our PINGs' deadlines, keepalive, idle timeout."""

from __future__ import annotations

import logging
import math
from typing import Protocol

import trio
from trio.lowlevel import ParkingLot

from ._errors import KeepaliveTimeout

logger = logging.getLogger("muxstream")


class PingTracker:
    """Our PINGs in flight: when each was sent, who waits for it, its deadline.

    Deadlines are enforced by the session's timer task (:func:`run_timers`).
    """

    __slots__ = ("deadlines", "last_rtt", "received", "rtts", "sent", "waiters",
                 "watch_lot", "watch_until")

    def __init__(self) -> None:
        #: ping id -> (when sent, set when answered, timed out or the session ended)
        self.waiters: dict[int, tuple[float, trio.Event]] = {}
        #: (deadline, ping id), in send order (a list: small while empty)
        self.deadlines: list[tuple[float, int]] = []
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
        answered = 0
        while answered < len(pending) and pending[answered][1] not in self.waiters:
            answered += 1  # answered long ago
        if answered:
            del pending[:answered]
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

    def settled(self, ping_id: int) -> bool:
        """Whether ``ping_id`` was answered, timed out or woken by the session's end."""
        waiter = self.waiters.get(ping_id)
        return waiter is None or waiter[1].is_set()

    def expire(self, now: float) -> float:
        """Wake each ping whose deadline passed (it then raises PingTimeout);
        return the earliest deadline of a ping still unanswered (inf: none)."""
        pings = self.waiters
        earliest = math.inf
        kept = []
        for deadline, pid in self.deadlines:
            if pid not in pings:
                continue
            if deadline <= now:
                pings[pid][1].set()
            else:
                kept.append((deadline, pid))
                earliest = min(earliest, deadline)
        self.deadlines = kept
        return earliest


class TimerHost(Protocol):
    """What the session's timer task needs of the session (its core)."""

    @property
    def closing(self) -> bool:
        """A close has begun: keepalive and the idle timeout stop."""
        ...

    @property
    def idle(self) -> bool:
        """No stream is open or waiting for accept()."""
        ...

    last_activity: float
    pings: PingTracker

    def start_ping(self, timeout: float) -> tuple[int, trio.Event]:
        """Queue a PING tracked by ``pings``; raise as ``Session.ping`` does if
        the session cannot ping any more."""
        ...

    def fail(self, exc: BaseException) -> None: ...

    def close_when_idle(self) -> None: ...


async def run_timers(host: TimerHost, keepalive_interval: float | None, ping_timeout: float,
                     idle_timeout: float | None) -> None:
    """The session's one timer task: PING deadlines, keepalive, the idle timeout.

    PING deadlines: wakes each ping whose deadline passed, sleeping until the
    earliest deadline of a ping still unanswered; a new ping wakes it only if
    its deadline is earlier still (a cancel scope per ``ping()`` would cost
    ~20 us, a tenth of a round trip). Keepalive: a PING every
    ``keepalive_interval`` s once the previous one was answered; one left
    unanswered for ``ping_timeout`` s fails the session with
    ``KeepaliveTimeout``. Idle timeout: a graceful close once nothing happened
    for ``idle_timeout`` s with no stream left. One task for all three, since
    a task and its sleep cost an idle session ~3.5 KiB (docs/performance.md).
    Runs until cancelled.
    """
    pings = host.pings
    next_keepalive = (trio.current_time() + keepalive_interval if keepalive_interval
                      else math.inf)
    keepalive_id: int | None = None
    keepalive_deadline = math.inf
    idle_deadline = host.last_activity + idle_timeout if idle_timeout else math.inf
    while True:
        now = trio.current_time()
        wake_at = pings.expire(now)
        if keepalive_id is not None and pings.settled(keepalive_id):
            answered = pings.finish(keepalive_id) is not None
            keepalive_id = None
            if not answered:
                # Unanswered: by its deadline, or the session ended (it woke
                # every ping); either way no more keepalives.
                next_keepalive = math.inf
                if now >= keepalive_deadline:
                    host.fail(KeepaliveTimeout(
                        f"keepalive PING unanswered for {ping_timeout} s"))
        if host.closing:
            next_keepalive = idle_deadline = math.inf
        if keepalive_id is None and now >= next_keepalive:
            assert keepalive_interval is not None
            try:
                keepalive_id, _ = host.start_ping(ping_timeout)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                next_keepalive = math.inf
            else:
                keepalive_deadline = now + ping_timeout
                next_keepalive = now + keepalive_interval
                wake_at = min(wake_at, keepalive_deadline)
        if keepalive_id is None or next_keepalive > now:
            # (with one unanswered past next_keepalive: its deadline wakes us)
            wake_at = min(wake_at, next_keepalive)
        if idle_deadline < math.inf:
            assert idle_timeout is not None
            if now >= idle_deadline:
                if host.idle:
                    logger.debug("idle for %s s; closing", idle_timeout)
                    host.close_when_idle()
                    idle_deadline = math.inf
                else:  # a stream is open: that counts as activity
                    host.last_activity = now
            if idle_deadline < math.inf:
                idle_deadline = host.last_activity + idle_timeout
                wake_at = min(wake_at, idle_deadline)
        pings.watch_until = wake_at
        with trio.move_on_at(wake_at):
            await pings.watch_lot.park()
