"""Several worker processes and one broadcast: one sender at a time, a clean hand-over, and a
stalled sender that lost its lease stops. Each worker has its own storage connection to the
same database (both adapters); the chats are a recording ``Notifier``."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from services.broadcast import BroadcastWorker
from services.messages import Message
from services.models import BroadcastStatus, DeliveryStatus
from services.storage.base import Storage
from tests.support.supabase_stack import StorageFactory

ADMIN = 9001
USERS = list(range(9100, 9140))


class Chats:
    """Telegram as the workers see it: every message, who sent it, a little latency."""

    def __init__(self, latency: float = 0.005) -> None:
        self.latency = latency
        self.by_worker: Counter[str] = Counter()
        self.received: Counter[int] = Counter()
        self.to_admin: list[str] = []
        self.changed = asyncio.Condition()

    async def until_sent(self, worker: str, count: int) -> None:
        async with self.changed:
            await asyncio.wait_for(
                self.changed.wait_for(lambda: self.by_worker[worker] >= count), timeout=10
            )

    def notifier(self, worker: str) -> WorkerChats:
        return WorkerChats(self, worker)


class WorkerChats:
    """One worker's ``Notifier``."""

    def __init__(self, chats: Chats, worker: str) -> None:
        self._chats = chats
        self._worker = worker

    async def notify(self, user_id: int, message: Message) -> bool:
        await asyncio.sleep(self._chats.latency)
        if user_id == ADMIN:
            self._chats.to_admin.append(message.text)
        else:
            self._chats.received[user_id] += 1
            self._chats.by_worker[self._worker] += 1
            async with self._chats.changed:
                self._chats.changed.notify_all()
        return True


async def with_users(storage: Storage) -> Storage:
    for user_id in USERS:
        await storage.upsert_profile(user_id, first_name=f"U{user_id}")
    return storage


async def finished(storage: Storage, broadcast_id: int, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            current = await storage.get_broadcast(broadcast_id)
            assert current is not None
            if current.status is not BroadcastStatus.RUNNING:
                return
            await asyncio.sleep(0.05)


async def test_a_second_worker_leaves_a_live_senders_broadcast_alone(
    storage: Storage, storage_factory: StorageFactory
) -> None:
    chats = Chats()
    first = BroadcastWorker(await with_users(storage), chats.notifier("first"), rate=200)
    second = BroadcastWorker(await storage_factory.open(), chats.notifier("second"), rate=200)

    broadcast = await first.create(ADMIN, "Spring sale")
    # The second worker starts (a deploy) and then sweeps, while the first is sending.
    assert await second.start() == []
    assert await second.adopt() == []
    await first.wait(broadcast.id)

    assert chats.by_worker == {"first": len(USERS)}
    assert set(chats.received.values()) == {1}
    assert any(f"Broadcast #{broadcast.id} finished" in text for text in chats.to_admin)


async def test_a_clean_stop_hands_the_broadcast_over_at_once(
    storage: Storage, storage_factory: StorageFactory
) -> None:
    chats = Chats(latency=0.02)
    first = BroadcastWorker(await with_users(storage), chats.notifier("first"), rate=100)
    second = BroadcastWorker(await storage_factory.open(), chats.notifier("second"), rate=100)
    broadcast = await first.create(ADMIN, "Spring sale")
    await chats.until_sent("first", 10)

    await first.stop()  # lanes finish the message in hand, then the lease is given up
    [resumed] = await second.adopt()

    assert resumed.id == broadcast.id
    await finished(storage, broadcast.id)
    assert chats.by_worker["first"] >= 10
    assert chats.by_worker["second"] > 0
    assert sorted(chats.received) == USERS  # everyone once, nobody twice
    assert set(chats.received.values()) == {1}
    counts = await storage.broadcast_counts(broadcast.id)
    assert counts[DeliveryStatus.SENT] == len(USERS)
    assert counts[DeliveryStatus.INTERRUPTED] == 0


async def test_a_sender_that_lost_its_lease_stops(
    storage: Storage, storage_factory: StorageFactory
) -> None:
    # The first worker stalls long enough for its lease to be taken (here: forced), then
    # notices at its next renewal and leaves the rest to the new holder.
    chats = Chats(latency=0.02)
    lease = timedelta(seconds=0.6)
    first = BroadcastWorker(
        await with_users(storage), chats.notifier("first"), rate=40, lease=lease
    )
    second = BroadcastWorker(
        await storage_factory.open(), chats.notifier("second"), rate=40, lease=lease
    )
    broadcast = await first.create(ADMIN, "Spring sale")
    await chats.until_sent("first", 3)

    [resumed] = await second.adopt(take_over=True)
    assert resumed.id == broadcast.id
    await asyncio.sleep(lease.total_seconds() / 3 + 0.3)  # the first worker's next renewal
    sent_by_first = chats.by_worker["first"]
    await finished(storage, broadcast.id)

    assert chats.by_worker["first"] == sent_by_first  # it stopped
    assert max(chats.received.values()) == 1  # nobody twice
    counts = await storage.broadcast_counts(broadcast.id)
    # Rows the first worker had in flight at the take-over count as interrupted, never resent.
    assert counts[DeliveryStatus.SENT] + counts[DeliveryStatus.INTERRUPTED] == len(USERS)
    assert counts[DeliveryStatus.SENT] <= sum(chats.received.values()) <= len(USERS)
