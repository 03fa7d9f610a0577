"""Mapping a function over many files in worker processes, in order, when there are enough files to pay for them."""

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

SERIAL_BELOW = 512  # items; under this a process pool costs more than it saves


def parallel_map(
    function: Callable[[Item], Result],
    items: Iterable[Item],
    workers: int | None = None,
    serial_below: int = SERIAL_BELOW,
) -> Iterator[Result]:
    """Results in the order of `items`, spread over `workers` processes (all cores by default)."""
    items = list(items)
    workers = workers or os.cpu_count() or 1
    if len(items) < serial_below or workers == 1:
        yield from map(function, items)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(function, items, chunksize=max(1, len(items) // (workers * 8)))
