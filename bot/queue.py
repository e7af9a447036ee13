"""Bounded generation: at most ``max_concurrent`` replies are generated at once, the rest wait in
line, first come first served, and always know their place.

A turn takes a ticket (:meth:`GenerationQueue.ticket`, a context manager), iterates
:meth:`Ticket.positions` — each item is its 1-based place in line while it waits, so the router
can show it — and holds a generation slot from the moment that iterator ends until the ``with``
block exits, however it exits (normal end, exception, or the consumer closing the generator that
holds the block). There is no time limit: a ticket waits until it is served or leaves.

Waiting re-yields the place at least every ``every_s`` seconds even when it has not changed: a
Python generator cannot be closed while it is blocked inside ``next()``, so Gradio (which closes
the iterator of a customer who left) gets a chance to close it and free the place in line.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class Ticket:
    """One turn's place in a :class:`GenerationQueue` (create with :meth:`GenerationQueue.ticket`)."""

    def __init__(self, queue: "GenerationQueue"):
        self._queue = queue

    def positions(self, every_s: float = 2.0) -> Iterator[int]:
        """Block until this ticket holds a slot, yielding its place in line meanwhile.

        Args:
            every_s: seconds after which an unchanged place is yielded again (> 0).

        Yields:
            The 1-based place (1 = served next): at once when the ticket has to wait, whenever the
            place changes, and every ``every_s`` seconds. Nothing when a slot is free at once.
        """
        shown = None
        while (place := self._queue._next_place(self, shown, every_s)) != 0:
            shown = place
            yield place


class GenerationQueue:
    """A FIFO semaphore with visible places: ``max_concurrent`` holders at once, the rest in line.

    Thread-safe; one instance is shared by every turn of a server (:class:`bot.router.Router`).

    Raises:
        ValueError: ``max_concurrent`` < 1.
    """

    def __init__(self, max_concurrent: int):
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, not {max_concurrent}")
        self.max_concurrent = max_concurrent
        self._changed = threading.Condition()
        self._line: deque[Ticket] = deque()
        self._holders: set[Ticket] = set()

    @property
    def running(self) -> int:
        """Tickets holding a slot now (0..``max_concurrent``)."""
        with self._changed:
            return len(self._holders)

    @property
    def waiting(self) -> int:
        """Tickets in line now."""
        with self._changed:
            return len(self._line)

    @contextmanager
    def ticket(self) -> Iterator[Ticket]:
        """Join the end of the line; on leaving the block, give up the slot or the place in line.

        Yields:
            The :class:`Ticket`; iterate its :meth:`Ticket.positions` before generating.
        """
        ticket = Ticket(self)
        with self._changed:
            self._line.append(ticket)
            self._admit()
        try:
            yield ticket
        finally:
            with self._changed:
                if ticket in self._holders:
                    self._holders.remove(ticket)
                else:
                    self._line.remove(ticket)
                self._admit()

    def _admit(self) -> None:
        """Move tickets from the front of the line into free slots (caller holds the lock)."""
        while self._line and len(self._holders) < self.max_concurrent:
            self._holders.add(self._line.popleft())
        self._changed.notify_all()

    def _place(self, ticket: Ticket) -> int:
        return 0 if ticket in self._holders else self._line.index(ticket) + 1

    def _next_place(self, ticket: Ticket, shown: int | None, timeout: float) -> int:
        """The ticket's place once it differs from ``shown`` or after ``timeout`` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: self._place(ticket) != shown, timeout)
            return self._place(ticket)
