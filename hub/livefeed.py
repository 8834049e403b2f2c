"""Wakes the live ratings streams (``GET /api/v1/ratings/stream``) when ratings are stored.

The feed carries no ratings, only the news that some were committed: each stream then reads the
ratings after the last id it sent from the database. So a stream never misses one (a slow reader
cannot overflow a queue, a reconnect with Last-Event-ID reads the same table) and what it sends is
exactly what the ratings API returns. Ids only grow (one SQLite writer, no deletes), so "after the
last id sent" is complete.

Ingest calls :meth:`LiveFeed.publish` after its commit (hub/service.py); anything else that stores
ratings (the QR channel) calls it too. :meth:`close` ends every stream at once, so the hub's stop
does not wait for open browsers.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Notify = Callable[[], object]


class LiveFeed:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: list[Notify] = []
        self.closed = threading.Event()
        self.last_id = 0  # the highest rating id published (0: none since start)

    def subscribe(self, notify: Notify) -> Notify:
        """``notify`` is called, from the publishing thread, after each publish and at close: an
        asyncio consumer passes ``lambda: loop.call_soon_threadsafe(event.set)``."""
        with self._lock:
            if not self.closed.is_set():
                self._subs.append(notify)
        if self.closed.is_set():
            notify()
        return notify

    def unsubscribe(self, notify: Notify) -> None:
        with self._lock:
            self._subs = [n for n in self._subs if n is not notify]

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, rating_ids: list[int | None] | None = None) -> None:
        """Ratings were committed (their ids, when known): wake every stream. Never raises and
        never blocks: it runs on the ingest thread, after the acks."""
        ids = [i for i in rating_ids or [] if i is not None]
        with self._lock:
            if ids:
                self.last_id = max(self.last_id, *ids)
            subs = list(self._subs)
        for notify in subs:
            try:
                notify()
            except Exception:  # e.g. the stream's event loop is gone: drop that stream
                log.warning("a live ratings stream could not be woken; it was dropped")
                self.unsubscribe(notify)

    def close(self) -> None:
        """End every stream (the hub is stopping)."""
        self.closed.set()
        with self._lock:
            subs, self._subs = self._subs, []
        for notify in subs:
            with contextlib.suppress(Exception):
                notify()
