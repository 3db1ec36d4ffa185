"""Run a producer in a background thread so that input decoding and augmentation overlap compute."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


def prefetch(iterator_fn: Callable[[], Iterator[T]], depth: int = 2) -> Iterator[T]:
    """Items of `iterator_fn()`, produced `depth` ahead in a daemon thread; its exceptions re-raise here."""
    q: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    sentinel = object()
    errors: list[BaseException] = []
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in iterator_fn():
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            errors.append(exc)
        finally:
            q.put(sentinel)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is sentinel:
                if errors:
                    raise errors[0]
                return
            yield item
    finally:
        stop.set()
