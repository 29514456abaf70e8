"""The project's 3-node cluster launcher (bridge_devtools.broker.cluster): three KRaft nodes on
127.0.0.1 form one cluster; replicated topics keep taking ``acks=all`` writes when a node is
killed, paused or restarted, and the node rejoins the ISR afterwards; a leader cut off from its
followers' replication traffic (``isolate_replication``) keeps leading, shrinks the ISR to itself
and takes its followers back after ``restore_replication``.

One cluster for the module; every test leaves all three nodes running and in sync.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bridge_devtools.broker import BrokerError, LocalCluster, probe
from bridge_devtools.broker.cluster import PartitionState
from tests.support.kafka import read_topic
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

ALL = (1, 2, 3)
# A killed or paused node is fenced after broker.session.timeout.ms (3 s); leader election and
# a restarted JVM (≈ 5 s on 2 cores) come on top.
FAULT_WAIT_S = 45.0
#: ``replica.lag.time.max.ms`` of this module's cluster (Kafka's default: 30 s), in seconds: an
#: isolated leader drops its followers from the ISR after this, checked every half of it.
REPLICA_LAG_S = 8.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster(size=3, extra_properties={"replica.lag.time.max.ms": int(REPLICA_LAG_S * 1000)})
    try:
        c.start(timeout_s=180)
        yield c
        # stop() resumes a paused node before its SIGTERM: without that, its JVM would sit out
        # the whole SIGTERM timeout and be SIGKILLed.
        c.pause(1)
        t0 = time.monotonic()
        c.stop(timeout_s=60)
        assert time.monotonic() - t0 < 30, f"stop took {time.monotonic() - t0:.1f}s"
        assert not any(c.is_running(n) for n in ALL)
    finally:
        c.cleanup()


async def new_topic(cluster: LocalCluster) -> str:
    """A fresh single-partition topic with replication factor 3, all replicas in sync."""
    topic = f"cluster-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 3)])
    finally:
        await admin.close()
    await wait_partition(cluster, topic, lambda s: s.leader is not None and s.isr == ALL, "all 3 replicas in sync")
    return topic


async def wait_partition(
    cluster: LocalCluster, topic: str, check: Callable[[PartitionState], bool], what: str
) -> PartitionState:
    """Poll the partition's metadata until ``check`` holds; return that state."""
    seen: list[PartitionState] = []
    errors: list[str] = []

    async def holds() -> bool:
        try:
            seen.append(await cluster.describe_partition(topic))
        except Exception as exc:  # a node just killed/paused may still be in the metadata: ask again
            errors.append(repr(exc))
            return False
        return check(seen[-1])

    await wait_until(
        holds,
        timeout_s=FAULT_WAIT_S,
        interval_s=0.2,
        message=f"{topic}: never {what}; last seen {seen[-1:]}, last error {errors[-1:]}",
    )
    return seen[-1]


async def leader_of(cluster: LocalCluster, topic: str) -> int:
    """The partition's leader, through :meth:`LocalCluster.leader_of`, polled: a broker's metadata
    may lag the controller's for a moment (a new topic is briefly unknown to it)."""
    leaders: list[int | None] = []

    async def known() -> bool:
        try:
            leaders.append(await cluster.leader_of(topic))
        except Exception:
            return False
        return leaders[-1] is not None

    await wait_until(known, timeout_s=FAULT_WAIT_S, interval_s=0.2, message=f"{topic}: no leader")
    leader = leaders[-1]
    assert leader is not None
    return leader


async def produce(cluster: LocalCluster, topic: str, value: bytes) -> None:
    """One idempotent ``acks=all`` record, through the live nodes only."""
    producer = AIOKafkaProducer(
        bootstrap_servers=cluster.live_bootstrap_servers, acks="all", enable_idempotence=True, request_timeout_ms=15000
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def test_three_brokers_on_loopback_with_production_replication(cluster: LocalCluster) -> None:
    assert cluster.last_start_s is not None
    assert cluster.last_start_s < 120
    hosts = cluster.bootstrap_servers.split(",")
    assert len(hosts) == 3
    assert all(h.startswith("127.0.0.1:") for h in hosts)
    assert not cluster.cluster_id.startswith("-")
    expected = {(n, "127.0.0.1", cluster.node(n).port) for n in ALL}
    for n in ALL:
        answer = probe("127.0.0.1", cluster.node(n).port or 0)
        assert answer is not None
        assert answer.cluster_id == cluster.cluster_id
        assert set(answer.brokers) == expected
        props = cluster.node(n).server_properties()
        assert props["node.id"] == str(n)
        assert len(props["controller.quorum.voters"].split(",")) == 3
        assert props["default.replication.factor"] == "3"
        assert props["min.insync.replicas"] == "2"
        assert props["transaction.state.log.replication.factor"] == "3"
        assert props["transaction.state.log.min.isr"] == "2"
        assert cluster.node(n).log_path.is_file()

    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_cluster()
    finally:
        await admin.close()
    assert sorted(b["node_id"] for b in described["brokers"]) == list(ALL)


async def test_replication_factor_3_topic_has_three_in_sync_replicas(cluster: LocalCluster) -> None:
    topic = await new_topic(cluster)
    state = await wait_partition(cluster, topic, lambda s: s.replicas == ALL, "3 replicas")
    assert state.isr == ALL
    assert state.leader in ALL
    assert await leader_of(cluster, topic) in ALL


async def test_killed_leader_loses_leadership_and_acks_all_still_succeeds(cluster: LocalCluster) -> None:
    topic = await new_topic(cluster)
    await produce(cluster, topic, b"before")
    leader = await leader_of(cluster, topic)
    cluster.kill(leader)
    try:
        assert not cluster.is_running(leader)
        state = await wait_partition(
            cluster, topic, lambda s: s.leader not in (None, leader) and leader not in s.isr, "a new leader"
        )
        assert len(state.isr) == 2  # = min.insync.replicas: acks=all is still accepted
        await produce(cluster, topic, b"after")
    finally:
        cluster.start(leader)
    await wait_partition(cluster, topic, lambda s: s.isr == ALL, f"node {leader} back in the ISR")
    records = await read_topic(cluster.bootstrap_servers, topic, expect=2)
    assert [r.value for r in records] == [b"before", b"after"]


async def test_paused_leader_is_fenced_and_rejoins_after_resume(cluster: LocalCluster) -> None:
    topic = await new_topic(cluster)
    leader = await leader_of(cluster, topic)
    cluster.pause(leader)
    try:
        assert cluster.is_paused(leader)
        assert cluster.is_running(leader)
        assert str(cluster.node(leader).port) not in cluster.live_bootstrap_servers
        await wait_partition(
            cluster, topic, lambda s: s.leader not in (None, leader) and leader not in s.isr, "a new leader"
        )
        await produce(cluster, topic, b"while paused")
    finally:
        cluster.resume(leader)
    assert not cluster.is_paused(leader)
    await wait_partition(cluster, topic, lambda s: s.isr == ALL, f"node {leader} back in the ISR")
    records = await read_topic(cluster.bootstrap_servers, topic, expect=1)
    assert [r.value for r in records] == [b"while paused"]


async def test_graceful_stop_and_restart_rejoin_the_isr(cluster: LocalCluster) -> None:
    topic = await new_topic(cluster)
    leader = await leader_of(cluster, topic)
    ports = (cluster.node(leader).port, cluster.node(leader).controller_port)
    cluster.stop(leader)  # controlled shutdown: leadership moves before the JVM exits
    try:
        assert not cluster.is_running(leader)
        await wait_partition(cluster, topic, lambda s: s.leader not in (None, leader), "a new leader")
        await produce(cluster, topic, b"one node stopped")
    finally:
        cluster.start(leader)
    assert (cluster.node(leader).port, cluster.node(leader).controller_port) == ports
    await wait_partition(cluster, topic, lambda s: s.isr == ALL, f"node {leader} back in the ISR")

    current = await leader_of(cluster, topic)
    follower = next(n for n in ALL if n != current)
    cluster.restart(follower)
    await wait_partition(cluster, topic, lambda s: s.isr == ALL, f"node {follower} back in the ISR")
    await produce(cluster, topic, b"after restart")
    records = await read_topic(cluster.bootstrap_servers, topic, expect=2)
    assert [r.value for r in records] == [b"one node stopped", b"after restart"]


async def test_leader_cut_off_from_its_followers_shrinks_the_isr_and_stays_leader(cluster: LocalCluster) -> None:
    topic = await new_topic(cluster)
    await produce(cluster, topic, b"before")
    leader = await leader_of(cluster, topic)
    producer = AIOKafkaProducer(
        bootstrap_servers=cluster.bootstrap_servers, acks="all", enable_idempotence=True, request_timeout_ms=90000
    )
    await producer.start()
    t0 = time.monotonic()
    cluster.isolate_replication(leader)
    try:
        assert cluster.is_isolated(leader)
        # appended by the leader, acknowledged by no follower: its ack waits (only a follower
        # behind the leader's end is dropped from the ISR; an idle partition keeps its ISR)
        during = asyncio.create_task(producer.send_and_wait(topic, b"during"))
        await asyncio.sleep(1.0)
        assert not during.done()
        # the followers' fetches hang: after replica.lag.time.max.ms (checked every half of it)
        # the leader alone is in sync, and it still leads: it heartbeats to the controller
        state = await wait_partition(cluster, topic, lambda s: s.isr == (leader,), f"ISR shrunk to node {leader}")
        shrunk_s = time.monotonic() - t0
        assert state.leader == leader
        assert REPLICA_LAG_S * 0.9 < shrunk_s < REPLICA_LAG_S * 1.5 + 5, f"ISR shrunk after {shrunk_s:.1f}s"
        expected = {(n, "127.0.0.1", cluster.node(n).port) for n in ALL}
        for n in ALL:  # registered and unfenced: every node's metadata lists all three brokers
            answer = probe("127.0.0.1", cluster.node(n).port or 0)
            assert answer is not None
            assert set(answer.brokers) == expected
    finally:
        cluster.restore_replication(leader)
    try:
        assert not cluster.is_isolated(leader)
        state = await wait_partition(cluster, topic, lambda s: s.isr == ALL, "all 3 replicas back in the ISR")
        assert state.leader == leader
        # retried (NOT_ENOUGH_REPLICAS while the ISR was 1 < min.insync.replicas), then acked once
        await asyncio.wait_for(during, FAULT_WAIT_S)
    finally:
        await producer.stop()
    await produce(cluster, topic, b"after")
    records = await read_topic(cluster.bootstrap_servers, topic, expect=3)
    assert [r.value for r in records] == [b"before", b"during", b"after"]


def test_isolation_needs_the_proxies_of_an_attached_cluster(cluster: LocalCluster) -> None:
    for n in ALL:
        props = cluster.node(n).server_properties()
        assert props["inter.broker.listener.name"] == "REPLICATION"
        assert f"REPLICATION://127.0.0.1:{cluster.node(n).replication_port}" in props["listeners"]
        assert f"PLAINTEXT://127.0.0.1:{cluster.node(n).port}" in props["advertised.listeners"]
        assert str(cluster.node(n).replication_port) not in props["advertised.listeners"]  # the proxy's
    detached = LocalCluster(size=3, state_dir=cluster.state_dir, replication_proxy=False)
    with pytest.raises(BrokerError, match="no replication proxy"):
        detached.isolate_replication(1)
