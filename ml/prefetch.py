"""Batches prepared ahead of the model by threads (augmentation while the model trains).

OpenCV and numpy release the GIL, so threads run augmentation in parallel; unlike forked
processes they cannot deadlock on a thread pool (CUDA's, OpenCV's) that the parent was running.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def prefetched(make: Callable[[int], T], n: int, workers: int) -> Iterator[T]:
    """``make(0), ..., make(n - 1)`` in order; with ``workers`` > 0, that many threads compute up to
    ``2 * workers`` items ahead of the consumer. Items still queued when the consumer stops early are
    dropped. ``make`` must not depend on the order the threads run in (give each item its own seed)."""
    if workers <= 0:
        yield from (make(i) for i in range(n))
        return
    with ThreadPoolExecutor(workers) as pool:
        ahead = deque(pool.submit(make, i) for i in range(min(n, 2 * workers)))
        nxt = len(ahead)
        try:
            while ahead:
                item = ahead.popleft().result()
                if nxt < n:
                    ahead.append(pool.submit(make, nxt))
                    nxt += 1
                yield item
        finally:
            for f in ahead:
                f.cancel()
