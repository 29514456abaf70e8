"""A local multi-node KRaft cluster for fault tests: :class:`LocalCluster`.

Each node is a :class:`~bridge_devtools.broker.process.LocalBroker` (combined broker+controller
on 127.0.0.1, its own state dir, ports and logs); the cluster gives them one cluster id and one
static quorum (``controller.quorum.voters``, accepted by Kafka 3.9 and 4.x alike), starts and
stops them in parallel and offers per-node faults: SIGKILL, SIGSTOP/SIGCONT, graceful stop, and
(attached clusters only) a node cut off from its peers' replication traffic while it stays in the
quorum (:meth:`LocalCluster.isolate_replication`, through :class:`~.proxy.BlackHoleProxy`).

Standard library only, except :meth:`LocalCluster.describe_partition` and
:meth:`LocalCluster.leader_of`, which import aiokafka when called.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

from bridge_devtools.broker.fetch import _BOOTSTRAP_FILE, BrokerError, fetch, kafka_version
from bridge_devtools.broker.probe import free_ports, probe
from bridge_devtools.broker.process import LocalBroker, _new_cluster_id
from bridge_devtools.broker.proxy import BlackHoleProxy

_CLUSTER_STATE_FILE = "cluster.json"

_T = TypeVar("_T")


def cluster_properties(size: int) -> dict[str, object]:
    """The ``server.properties`` entries a cluster of *size* nodes sets on top of :class:`LocalBroker`'s.

    Replication like production: replication factor ``min(3, size)`` for new topics and the
    internal topics (consumer offsets, transaction state, share-group state), and one replica
    fewer as the minimum ISR, so ``acks=all`` and transactions survive one node down (3 nodes:
    RF 3, min ISR 2). Everything else is :meth:`LocalBroker.server_properties`: one partition per
    internal topic (so one group/transaction coordinator, findable with
    :meth:`LocalCluster.leader_of`), broker heartbeat 500 ms and session 3 s (a killed or paused
    node is fenced, and so dropped from every ISR, after ≈ 3 s instead of 9 s), no initial
    rebalance delay. Kafka's defaults are kept for the rest, e.g. ``replica.lag.time.max.ms``
    (30 s: only matters for a follower that stays registered but stops fetching, which only
    :meth:`LocalCluster.isolate_replication` produces; pass a lower one in ``extra_properties``
    to shrink ISRs sooner) and ``unclean.leader.election.enable=false``.
    """
    rf = min(3, size)
    min_isr = max(1, rf - 1)
    return {
        "default.replication.factor": rf,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": min_isr,
    }


class PartitionState(NamedTuple):
    """One partition as the cluster's metadata describes it (:meth:`LocalCluster.describe_partition`)."""

    #: Node id of the leader, ``None`` while there is none.
    leader: int | None
    #: Node ids of the assigned replicas.
    replicas: tuple[int, ...]
    #: Node ids of the in-sync replicas.
    isr: tuple[int, ...]


# Clusters started (attached) by this interpreter, stopped at exit so a crashed test run does not
# leak JVMs. Registered after process.py's guard, so it runs first (atexit is LIFO) and stops the
# nodes in parallel; the per-broker guard then finds nothing left to do.
_ATTACHED: set[LocalCluster] = set()


@atexit.register
def _stop_attached() -> None:
    for cluster in list(_ATTACHED):
        with contextlib.suppress(Exception):
            cluster.stop(timeout_s=10.0)


class LocalCluster:
    """*size* KRaft nodes (each broker+controller, a voter of one static quorum) on 127.0.0.1.

    Nodes are numbered 1 … *size*: the number is the Kafka ``node.id``, so what
    :meth:`leader_of` returns can be passed to :meth:`kill`, :meth:`pause`, :meth:`stop`, ….

    Every node has three listeners: ``PLAINTEXT`` (clients: :attr:`bootstrap_servers`),
    ``CONTROLLER`` (the quorum) and ``REPLICATION`` (inter-broker: followers' fetches, the
    transaction coordinator's markers). When the whole cluster is started attached (the default),
    each node advertises for ``REPLICATION`` not its own port but a :class:`BlackHoleProxy` this
    object runs in front of it (in a thread of this process), so that
    :meth:`isolate_replication` can cut the node off from its peers; the proxies keep their ports
    across node restarts and live until the whole cluster stops. A detached cluster (the CLI's
    ``cluster start``) outlives this process and so cannot rely on its proxies: it advertises the
    real ports, and :meth:`isolate_replication` refuses. So does ``replication_proxy=False``.

    Layout of *state_dir*: ``cluster.json`` (version, size, cluster id, ports: a later
    ``LocalCluster(state_dir=...)`` or the CLI reuses them), ``bootstrap`` while running, and
    ``node-<id>/`` per node, a :class:`LocalBroker` state dir (``config/``, ``data/``,
    ``logs/server.log``, ``logs/stdout.log``).

    :param size: number of nodes (default 3; a recorded cluster keeps its size).
    :param version: Kafka version (see :func:`kafka_version`); a recorded cluster keeps its own.
    :param state_dir: directory for all nodes. Default: a fresh ``tempfile.mkdtemp()`` which
        :meth:`cleanup` (and leaving the ``with`` block) deletes. A directory you pass is never
        deleted by this class.
    :param jvm_opts: JVM flags of every node (default :data:`DEFAULT_JVM_OPTS`: ``-Xmx512m``).
    :param extra_properties: ``server.properties`` entries overriding :func:`cluster_properties`.
    :param auto_create_topics: value of ``auto.create.topics.enable``.
    :param replication_proxy: put a :class:`BlackHoleProxy` in front of each node's
        ``REPLICATION`` listener when started attached (default true; see above).

    Usable as a context manager: ``__enter__`` calls :meth:`start`, ``__exit__`` :meth:`cleanup`.
    """

    def __init__(
        self,
        size: int = 3,
        version: str | None = None,
        state_dir: str | Path | None = None,
        *,
        jvm_opts: Sequence[str] | None = None,
        extra_properties: Mapping[str, object] | None = None,
        auto_create_topics: bool = True,
        replication_proxy: bool = True,
    ) -> None:
        self._owns_state_dir = state_dir is None
        self.state_dir = Path(
            state_dir if state_dir is not None else tempfile.mkdtemp(prefix="bridge-kafka-cluster-")
        ).absolute()
        recorded = self._read_state()
        self.size: int = int(recorded.get("size") or size)
        if self.size < 1:
            raise BrokerError(f"a cluster needs at least one node, not {self.size}")
        self.version = kafka_version(version or recorded.get("version"))
        #: The shared ``cluster.id`` (never starting with ``-``, which ``kafka-storage`` would
        #: read as an option).
        self.cluster_id: str = recorded.get("cluster_id") or _new_cluster_id()
        ports: dict[str, dict[str, int]] = recorded.get("nodes") or {}
        props = {**cluster_properties(self.size), **(extra_properties or {})}
        self._nodes: dict[int, LocalBroker] = {
            n: LocalBroker(
                self.version,
                self.state_dir / f"node-{n}",
                ports.get(str(n), {}).get("port"),
                controller_port=ports.get(str(n), {}).get("controller_port"),
                replication_port=ports.get(str(n), {}).get("replication_port"),
                node_id=n,
                cluster_id=self.cluster_id,
                jvm_opts=jvm_opts,
                auto_create_topics=auto_create_topics,
                extra_properties=props,
            )
            for n in range(1, self.size + 1)
        }
        self._detach = False
        #: ``{node id: port of the proxy in front of its REPLICATION listener}``, recorded.
        self._proxy_ports: dict[int, int] = {
            int(n): int(p["replication_proxy_port"]) for n, p in ports.items() if p.get("replication_proxy_port")
        }
        self._use_proxies = replication_proxy
        #: The running proxies (attached whole-cluster start to whole-cluster stop).
        self._proxies: dict[int, BlackHoleProxy] = {}
        #: Seconds the last successful whole-cluster :meth:`start` took (launch to all registered).
        self.last_start_s: float | None = None

    # -- nodes and addresses ---------------------------------------------------

    @property
    def nodes(self) -> Mapping[int, LocalBroker]:
        """``{node id: LocalBroker}`` (paths of each node's logs: ``.log_path``, ``.stdout_path``)."""
        return dict(self._nodes)

    def node(self, node: int) -> LocalBroker:
        """The :class:`LocalBroker` of *node*. :raises BrokerError: no such node."""
        try:
            return self._nodes[node]
        except KeyError:
            raise BrokerError(f"no node {node!r} in this {self.size}-node cluster") from None

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:<p1>,127.0.0.1:<p2>,…"``, every node. :raises BrokerError: ports not chosen yet."""
        return ",".join(b.bootstrap_servers for b in self._nodes.values())

    @property
    def live_bootstrap_servers(self) -> str:
        """Like :attr:`bootstrap_servers`, only the nodes running and not paused.

        A paused node accepts connections but never answers, so a client bootstrapping from it
        waits for its request timeout; tests that pause a node give new clients this list.
        """
        return ",".join(b.bootstrap_servers for b in self._nodes.values() if b.is_running() and not b.is_paused())

    def is_running(self, node: int | None = None) -> bool:
        """Is *node*'s JVM alive (paused counts)? Without *node*: are all of them?"""
        if node is not None:
            return self.node(node).is_running()
        return all(b.is_running() for b in self._nodes.values())

    def is_paused(self, node: int) -> bool:
        """Is *node*'s JVM stopped by :meth:`pause`?"""
        return self.node(node).is_paused()

    def log_tails(self) -> str:
        """Every node's ERROR lines and log tails, for a failed test's message."""
        return "\n".join(f"==== node {n} ({b.state_dir})\n{b.log_tails()}" for n, b in self._nodes.items())

    # -- state files -------------------------------------------------------------

    def _read_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads((self.state_dir / _CLUSTER_STATE_FILE).read_text())
            return state
        except (OSError, ValueError):
            return {}

    def _write_state(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        nodes = {
            str(n): {
                "port": b.port,
                "controller_port": b.controller_port,
                "replication_port": b.replication_port,
                "replication_proxy_port": self._proxy_ports.get(n),
            }
            for n, b in self._nodes.items()
        }
        state = {"version": self.version, "size": self.size, "cluster_id": self.cluster_id, "nodes": nodes}
        (self.state_dir / _CLUSTER_STATE_FILE).write_text(json.dumps(state, indent=1))

    def _choose_ports(self) -> None:
        """Pick the ports not chosen yet (all of them on the first start; the replication and
        proxy ports of a cluster recorded before they existed), distinct from the recorded ones."""
        taken = {
            p
            for n, b in self._nodes.items()
            for p in (b.port, b.controller_port, b.replication_port, self._proxy_ports.get(n))
            if p
        }
        if not all(b.port and b.controller_port for b in self._nodes.values()):
            taken = set()
            fresh = iter(free_ports(2 * self.size))
            for b in self._nodes.values():
                b.port, b.controller_port = next(fresh), next(fresh)
                taken |= {b.port, b.controller_port}
        missing = sum(1 for b in self._nodes.values() if not b.replication_port) + sum(
            1 for n in self._nodes if not self._proxy_ports.get(n)
        )
        if not missing:
            return
        fresh = iter(p for p in free_ports(missing + len(taken)) if p not in taken)
        for n, b in self._nodes.items():
            if not b.replication_port:
                b.replication_port = next(fresh)
            if not self._proxy_ports.get(n):
                self._proxy_ports[n] = next(fresh)

    # -- replication proxies -----------------------------------------------------

    def _start_proxies(self) -> None:
        """Run a proxy in front of every node's REPLICATION listener and advertise it."""
        for n, b in self._nodes.items():
            if n not in self._proxies:
                assert b.replication_port is not None
                try:
                    proxy = BlackHoleProxy(self._proxy_ports[n], b.replication_port, name=f"replication-{n}")
                except OSError as exc:
                    raise BrokerError(f"node {n}: replication proxy port {self._proxy_ports[n]}: {exc}") from exc
                self._proxies[n] = proxy
            b.replication_advertised_port = self._proxy_ports[n]

    def _stop_proxies(self) -> None:
        for proxy in self._proxies.values():
            proxy.close()
        self._proxies.clear()
        for b in self._nodes.values():
            b.replication_advertised_port = None

    def isolate_replication(self, node: int) -> None:
        """Cut *node* off from its peers' replication traffic; it stays in the quorum, unfenced.

        The proxy in front of *node*'s ``REPLICATION`` listener stops forwarding in both
        directions on its connections and accepts new ones without forwarding them (a black
        hole: nothing is reset or closed). So followers' fetches from *node* hang (after
        ``replica.lag.time.max.ms``, default 30 s, *node*, if leader, shrinks its partitions'
        ISRs to itself; ``acks=all`` records it appended meanwhile wait for that), and so do the
        transaction coordinator's marker writes to it. Its clients (PLAINTEXT) and its heartbeats
        to the controller (CONTROLLER) are not touched, nor is its own fetching from the other
        nodes (that goes through *their* proxies). Survives a restart of *node*; undone by
        :meth:`restore_replication`.

        :raises BrokerError: no proxy in front of *node*: the cluster was started detached, or
            with ``replication_proxy=False``, or is not running.
        """
        self._proxy(node).isolate()

    def restore_replication(self, node: int) -> None:
        """Undo :meth:`isolate_replication`: the proxy closes the connections it held (the
        brokers reconnect within their reconnect backoff, ≈ 0.1-1 s) and forwards new ones; the
        followers catch up and rejoin the ISR. No-op when *node* is not isolated.

        :raises BrokerError: as :meth:`isolate_replication`.
        """
        self._proxy(node).restore()

    def is_isolated(self, node: int) -> bool:
        """Is *node* cut off by :meth:`isolate_replication`?"""
        proxy = self._proxies.get(node)
        return proxy is not None and proxy.isolated

    def _proxy(self, node: int) -> BlackHoleProxy:
        self.node(node)
        proxy = self._proxies.get(node)
        if proxy is None:
            raise BrokerError(
                f"node {node} has no replication proxy: isolation needs a cluster started attached "
                "(not the CLI's detached one) with replication_proxy=True"
            )
        return proxy

    # -- lifecycle ---------------------------------------------------------------

    def _each(self, call: Callable[[LocalBroker], _T], nodes: Sequence[int] | None = None) -> dict[int, _T]:
        """Run *call* on the nodes in parallel threads; raise one BrokerError naming every failure."""
        chosen = {n: self.node(n) for n in (nodes if nodes is not None else self._nodes)}
        with ThreadPoolExecutor(max_workers=len(chosen) or 1, thread_name_prefix="kafka-node") as pool:
            futures = {n: pool.submit(call, b) for n, b in chosen.items()}
        errors = {n: f.exception() for n, f in futures.items() if f.exception() is not None}
        if errors:
            raise BrokerError("\n".join(f"node {n}: {e}" for n, e in errors.items()))
        return {n: f.result() for n, f in futures.items()}

    def start(self, node: int | None = None, *, timeout_s: float = 120.0, detach: bool | None = None) -> float:
        """Start one node, or (without *node*) every node in parallel, and wait until usable.

        Formats each node's storage with the shared cluster id on first use. The whole cluster is
        usable when every node answers a Metadata request listing all *size* brokers. A single
        node (same data dir and ports as before) is started when it is registered again and listed
        in its own Metadata; it catches up and rejoins ISRs after that, in the background.

        :param timeout_s: seconds to wait (the first jar download has its own limit, see :func:`fetch`).
        :param detach: the JVMs survive this Python process (the CLI's ``cluster start``).
            Default: no for the whole cluster; a single node inherits the mode of the last
            whole-cluster start.
        :returns: seconds from launch to usable (whole cluster: also :attr:`last_start_s`).
        :raises BrokerError: a node is already running, or a node failed to start (all nodes
            just started are then stopped; the message holds each failing node's log tail), or
            the cluster did not list all brokers within *timeout_s*.
        """
        if node is not None:
            return self.node(node).start(timeout_s, detach=self._detach if detach is None else detach)
        detach = bool(detach)
        running = [n for n, b in self._nodes.items() if b.is_running()]
        if running:
            raise BrokerError(f"nodes {running} of {self.state_dir} are already running")
        t0 = time.monotonic()
        fetch(self.version)
        self._choose_ports()
        voters = {n: b.controller_port for n, b in self._nodes.items() if b.controller_port is not None}
        for b in self._nodes.values():
            b.quorum_voters = dict(voters)
        self._write_state()
        self._detach = detach
        if not detach:
            _ATTACHED.add(self)
        try:
            if self._use_proxies and not detach:
                self._start_proxies()
            else:
                self._stop_proxies()
            self._each(lambda b: b.start(timeout_s, detach=detach))
            self.wait_ready(max(1.0, timeout_s - (time.monotonic() - t0)))
        except BaseException:
            with contextlib.suppress(BrokerError):
                self._each(lambda b: b.kill())
            self._stop_proxies()
            _ATTACHED.discard(self)
            raise
        if detach:
            _ATTACHED.discard(self)
        self.last_start_s = time.monotonic() - t0
        (self.state_dir / _BOOTSTRAP_FILE).write_text(self.bootstrap_servers + "\n")
        return self.last_start_s

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until every node answers Metadata listing all *size* brokers (the stdlib probe).

        :raises BrokerError: not so within *timeout_s* seconds (with the nodes' log tails).
        """
        want = {(n, "127.0.0.1", b.port) for n, b in self._nodes.items()}
        deadline = time.monotonic() + timeout_s
        while True:
            answers = {n: probe("127.0.0.1", b.port or 0, timeout_s=1.0) for n, b in self._nodes.items()}
            if all(
                r is not None and set(r.brokers) == want and r.cluster_id == self.cluster_id for r in answers.values()
            ):
                return
            if time.monotonic() > deadline:
                seen = {n: (r.brokers if r else None) for n, r in answers.items()}
                raise BrokerError(
                    f"cluster not ready within {timeout_s:.0f}s (brokers listed per node: {seen})\n{self.log_tails()}"
                )
            time.sleep(0.1)

    def stop(self, node: int | None = None, *, timeout_s: float = 30.0) -> None:
        """Gracefully stop one node, or every node in parallel: SIGTERM (controlled shutdown), then SIGKILL.

        Paused nodes are resumed first. Data, config and ports are kept for :meth:`start`. The
        whole cluster stopped, the replication proxies close (the next :meth:`start` reopens them
        on the same ports); one node stopped, they stay.

        :param timeout_s: seconds to wait after SIGTERM before SIGKILL.
        :raises BrokerError: a JVM survived SIGKILL.
        """
        if node is not None:
            self.node(node).stop(timeout_s)
            return
        try:
            self._each(lambda b: b.stop(timeout_s))
        finally:
            if not any(b.is_running() for b in self._nodes.values()):
                self._stop_proxies()
                _ATTACHED.discard(self)
                with contextlib.suppress(FileNotFoundError):
                    (self.state_dir / _BOOTSTRAP_FILE).unlink()

    def kill(self, node: int) -> None:
        """SIGKILL *node* (a crash: no controlled shutdown). :meth:`start` brings it back."""
        self.node(node).kill()

    def pause(self, node: int) -> None:
        """SIGSTOP *node* (a hung node). The controller fences it after ``broker.session.timeout.ms`` (3 s)."""
        self.node(node).pause()

    def resume(self, node: int) -> None:
        """SIGCONT a paused *node*."""
        self.node(node).resume()

    def restart(self, node: int | None = None, *, timeout_s: float = 120.0, stop_timeout_s: float = 30.0) -> float:
        """:meth:`stop` then :meth:`start` (one node, or all): same data, same ports. Returns the start's seconds."""
        self.stop(node, timeout_s=stop_timeout_s)
        return self.start(node, timeout_s=timeout_s)

    def cleanup(self) -> None:
        """Stop every node and delete *state_dir* if this object created it (temp dir).

        A temp cluster's nodes are SIGKILLed: its data is deleted anyway, and a graceful stop of
        the last voters waits ≈ 5 s for a quorum that is gone (Raft's shutdown timeout).
        """
        if self._owns_state_dir:
            with contextlib.suppress(BrokerError):
                self._each(lambda b: b.kill())
        self.stop()
        if self._owns_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return (
            f"LocalCluster(size={self.size}, version={self.version!r}, state_dir={str(self.state_dir)!r}, "
            f"running={[n for n, b in self._nodes.items() if b.is_running()]})"
        )

    # -- metadata (aiokafka) -----------------------------------------------------

    async def describe_partition(self, topic: str, partition: int = 0, *, timeout_ms: int = 5000) -> PartitionState:
        """Leader, replicas and ISR of one partition, asked through aiokafka's admin client
        (``describe_topics``) from the live nodes (:attr:`live_bootstrap_servers`).

        :param timeout_ms: aiokafka ``request_timeout_ms``.
        :raises BrokerError: no live node, or the topic or partition is unknown to the cluster.
        """
        from aiokafka.admin import AIOKafkaAdminClient  # here: keeps this module stdlib-only

        bootstrap = self.live_bootstrap_servers
        if not bootstrap:
            raise BrokerError("no node of the cluster is live")
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
        await admin.start()
        try:
            topics = await admin.describe_topics([topic])
        finally:
            await admin.close()
        for t in topics:
            if t["topic"] != topic or t["error_code"] != 0:
                continue
            for p in t["partitions"]:
                if p["partition"] == partition:
                    leader = p["leader"]
                    return PartitionState(
                        leader if leader >= 0 else None, tuple(sorted(p["replicas"])), tuple(sorted(p["isr"]))
                    )
        raise BrokerError(f"{topic}[{partition}] not found in the cluster's metadata: {topics}")

    async def leader_of(self, topic: str, partition: int = 0) -> int | None:
        """Node id of the leader of *topic*[*partition*], ``None`` while there is none (:meth:`describe_partition`)."""
        return (await self.describe_partition(topic, partition)).leader
