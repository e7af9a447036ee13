"""The generation queue with real threads: first come first served, the bound, the places each
waiting ticket sees, and the slot or place given up on exception and on generator close."""

from __future__ import annotations

import threading
import time

import pytest

from bot.queue import GenerationQueue

WAIT_S = 10.0


def wait_for(condition, seconds: float = WAIT_S) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def turn(queue: GenerationQueue, every_s: float = 0.05):
    """A turn as the router runs it: its places while it waits, then "generating" with the slot."""
    with queue.ticket() as ticket:
        yield from ticket.positions(every_s)
        yield "generating"


def test_waiting_turns_are_served_in_arrival_order_and_see_their_places():
    queue = GenerationQueue(1)
    holder = turn(queue)
    assert next(holder) == "generating"
    places, served = {name: [] for name in "BCD"}, []
    done = {name: threading.Event() for name in "BCD"}

    def customer(name: str) -> None:
        with queue.ticket() as ticket:
            places[name].extend(ticket.positions(every_s=60))
            served.append(name)
            done[name].wait(WAIT_S)

    threads = []
    for arrived, name in enumerate("BCD", start=1):
        threads.append(threading.Thread(target=customer, args=(name,)))
        threads[-1].start()
        wait_for(lambda: queue.waiting == arrived)
    holder.close()
    for index, name in enumerate("BCD"):
        behind = "BCD"[index + 1:]
        wait_for(lambda: served == list("BCD"[:index + 1])
                 and all(places[other][-1:] == [place] for place, other in enumerate(behind, start=1)))
        assert queue.running == 1
        done[name].set()
    for thread in threads:
        thread.join(WAIT_S)
    assert places == {"B": [1], "C": [2, 1], "D": [3, 2, 1]}
    assert (queue.running, queue.waiting) == (0, 0)


def test_no_more_than_max_concurrent_hold_a_slot():
    queue = GenerationQueue(2)
    release, lock = threading.Event(), threading.Lock()
    active, peak, done = [0], [0], []

    def customer() -> None:
        with queue.ticket() as ticket:
            for _ in ticket.positions(every_s=0.05):
                pass
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            release.wait(WAIT_S)
            time.sleep(0.01)
            with lock:
                active[0] -= 1
        done.append(1)

    threads = [threading.Thread(target=customer) for _ in range(8)]
    for thread in threads:
        thread.start()
    wait_for(lambda: active[0] == 2 and queue.waiting == 6)
    assert queue.running == 2
    release.set()
    for thread in threads:
        thread.join(WAIT_S)
    assert len(done) == 8 and peak[0] == 2
    assert (queue.running, queue.waiting) == (0, 0)


def test_closing_a_turn_frees_its_slot_or_its_place_in_line():
    queue = GenerationQueue(1)
    first, second, third = turn(queue), turn(queue), turn(queue)
    assert next(first) == "generating"
    assert next(second) == 1
    assert next(third) == 2
    second.close()                      # left while waiting: the one behind moves up
    assert next(third) == 1
    first.close()                       # left while generating: the slot goes to the next in line
    assert next(third) == "generating"
    assert (queue.running, queue.waiting) == (1, 0)
    third.close()
    assert (queue.running, queue.waiting) == (0, 0)


def test_an_exception_while_generating_frees_the_slot():
    queue = GenerationQueue(1)
    with pytest.raises(RuntimeError, match="model failed"):
        with queue.ticket() as ticket:
            assert list(ticket.positions()) == []
            raise RuntimeError("model failed")
    assert queue.running == 0
    assert next(turn(queue)) == "generating"


def test_an_unchanged_place_is_repeated_so_the_waiting_generator_can_be_closed():
    queue = GenerationQueue(1)
    holder, waiting = turn(queue), turn(queue, every_s=0.1)
    next(holder)
    assert next(waiting) == 1
    again = []
    started = time.monotonic()
    repeat = threading.Thread(target=lambda: again.append(next(waiting)), daemon=True)
    repeat.start()
    repeat.join(5)
    assert again == [1] and time.monotonic() - started > 0.05
    waiting.close()
    assert queue.waiting == 0
    holder.close()


def test_max_concurrent_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        GenerationQueue(0)
