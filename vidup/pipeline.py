"""Stages that overlap: each in its own thread, joined by bounded queues.

`run_pipeline(source, stage, stage, ...)` iterates `source` in one thread, passes its items through each stage
(a function from an iterator to an iterator, so a stage may batch) in its own thread, and yields the last stage's
items in the calling thread. Items stay in order (one thread per stage). Queues hold `depth` items, so memory
does not grow with the clip. The first error in any stage stops every stage and is raised in the caller, as it
was raised; an interrupt in the caller (Ctrl-C, SIGTERM) stops them too. Decoding, numpy, OpenCV, PyTorch and
PyAV release the GIL in their heavy work, so the stages really run at the same time.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator

_END = object()
POLL = 0.1  # seconds a blocked stage waits before looking at the stop flag again
JOIN = 10.0  # seconds to wait for a stage to notice a stop before leaving it behind (a daemon thread)


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def run_pipeline(source: Iterable, *stages: Callable[[Iterator], Iterator], depth: int = 2) -> Iterator:
    stop = threading.Event()
    queues = [queue.Queue(maxsize=depth) for _ in range(len(stages) + 1)]

    def put(q: queue.Queue, item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=POLL)
                return True
            except queue.Full:
                continue
        return False

    def drain(q: queue.Queue) -> Iterator:
        while True:
            try:
                item = q.get(timeout=POLL)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def work(produce: Callable[[], Iterator], out: queue.Queue) -> None:
        items = None
        try:
            items = produce()
            for item in items:
                if not put(out, item):
                    return
            put(out, _END)
        except BaseException as error:  # handed downstream, raised in the caller
            put(out, _Failure(error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                try:
                    close()  # generators release what they hold (an open container) in their own thread
                except Exception:
                    pass

    threads = [threading.Thread(target=work, args=(lambda: iter(source), queues[0]), daemon=True, name="vidup-source")]
    for i, stage in enumerate(stages):
        threads.append(
            threading.Thread(
                target=work,
                args=(lambda s=stage, q=queues[i]: s(drain(q)), queues[i + 1]),
                daemon=True,
                name=f"vidup-stage-{i + 1}",
            )
        )
    for thread in threads:
        thread.start()
    try:
        yield from drain(queues[-1])
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=JOIN)
