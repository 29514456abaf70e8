"""Reading records back from the broker with a real consumer (integration tests)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


async def read_topic(
    bootstrap: str, topic: str, *, expect: int, timeout_s: float = 20.0, isolation_level: str = "read_uncommitted"
) -> list[Any]:
    """All records of ``topic`` from the beginning; waits until at least ``expect`` arrived (and
    then a short quiet period, so that extra records would be seen too). ``isolation_level``:
    ``read_uncommitted`` (every record appended, aborted ones too) or ``read_committed``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        group_id=None,
        isolation_level=isolation_level,
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not parts and asyncio.get_running_loop().time() < deadline:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
            await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(parts or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        quiet_until = None
        while asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            got = [m for msgs in batch.values() for m in msgs]
            out.extend(got)
            if len(out) >= expect:
                if quiet_until is None:
                    quiet_until = asyncio.get_running_loop().time() + 1.0
                elif asyncio.get_running_loop().time() >= quiet_until:
                    break
        return out
    finally:
        await consumer.stop()


class FirstSendFails:
    """Fault injection on a real aiokafka producer: its first ``send`` raises ``error`` (e.g.
    ``OutOfOrderSequenceNumber``, ``KafkaTimeoutError``); everything else is the real producer."""

    def __init__(self, real: Any, error: BaseException) -> None:
        self._real = real
        self._error = error
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise self._error
        return await self._real.send(*args, **kwargs)
