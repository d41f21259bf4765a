"""The feeder: appends the dataset to the run's prompt stream, `epochs` times, on a daemon thread.

It starts from the run state's `fed` counter (kept by runtime.queue in the same transaction as the append),
so a resumed run neither repeats nor skips prompts. A full stream (back-pressure) and a restarting Redis are
waited out."""

from __future__ import annotations

import threading
import time

import redis

from mgpo.records import PromptRecord
from runtime.queue import Queue


class Feeder:
    def __init__(self, records: list[PromptRecord], epochs: int, queue: Queue, stop: threading.Event) -> None:
        self.records, self.total = records, len(records) * epochs
        self.queue, self.stop = queue, stop
        self.done = threading.Event()

    def start(self, position: int) -> Feeder:
        threading.Thread(target=self._feed, args=(position,), name="feeder", daemon=True).start()
        return self

    def _feed(self, position: int) -> None:
        while position < self.total and not self.stop.is_set():
            try:
                self.queue.put_prompts([self.records[position % len(self.records)]], timeout_s=1.0)
                position += 1
            except (TimeoutError, redis.ConnectionError):
                time.sleep(0.2)  # full (back-pressure) or Redis restarting: try again
        self.done.set()

    def exhausted(self) -> bool:
        """Every prompt fed, and none waiting or taken-but-unacknowledged in the stream."""
        if not self.done.is_set():
            return False
        depth = self.queue.depth()
        return depth["prompts_len"] == 0 and depth["prompts_pending"] == 0
