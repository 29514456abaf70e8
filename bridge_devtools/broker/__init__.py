"""Single-node Apache Kafka (KRaft) broker on 127.0.0.1 for development and tests.

There is no Docker on the development machines, so this module fetches the
Kafka broker jars from Maven Central (``mvn dependency:copy-dependencies`` on
``kafka-pom.xml`` next to this file) into a per-user cache outside the work
tree and runs ``kafka.Kafka`` directly with ``java``, in combined
broker+controller (KRaft) mode with a static one-voter quorum.

Requirements: Java 17+ (``$JAVA_HOME/bin/java`` or ``java`` on ``PATH``) and,
for the first fetch of a version, Maven 3.6.3+ (``mvn`` on ``PATH``) with
access to Maven Central.

Python API::

    from bridge_devtools.broker import LocalBroker

    with LocalBroker() as broker:          # fresh temp state dir, free ports
        use(broker.bootstrap_servers)      # "127.0.0.1:<port>"
        broker.restart()                   # same port, same data
    # leaving the block stops the JVM and deletes the temp state dir

CLI (``python -m bridge_devtools.broker --help``)::

    python -m bridge_devtools.broker fetch   [--version V]
    python -m bridge_devtools.broker start   [--version V] [--state-dir D] [--port P]
    python -m bridge_devtools.broker stop    [--state-dir D]
    python -m bridge_devtools.broker restart [--state-dir D]
    python -m bridge_devtools.broker status  [--state-dir D]
    python -m bridge_devtools.broker cluster start  [--version V] [--state-dir D] [--size N] [--reset]
    python -m bridge_devtools.broker cluster stop   [--state-dir D]
    python -m bridge_devtools.broker cluster status [--state-dir D]

A cluster for fault tests (:class:`LocalCluster`, ``cluster.py``): three combined nodes sharing
one cluster id and a static quorum, replication factor 3 and min ISR 2 (see
:func:`cluster_properties`)::

    with LocalCluster(size=3) as cluster:
        use(cluster.bootstrap_servers)              # "127.0.0.1:<p1>,127.0.0.1:<p2>,…"
        leader = await cluster.leader_of("t", 0)   # node ids are 1..size
        cluster.kill(leader)                        # or pause()/resume(), stop(), restart()
        cluster.start(leader)                       # same data dir, same ports
        cluster.isolate_replication(leader)         # its followers' fetches hang; it stays in
        cluster.restore_replication(leader)         # the quorum (attached clusters only)

Environment:

``BRIDGE_DEV_KAFKA_VERSION``
    Kafka version to use when none is passed (default :data:`DEFAULT_KAFKA_VERSION`).
``XDG_CACHE_HOME``
    Cache root (default ``~/.cache``); jars go to
    ``$XDG_CACHE_HOME/lark-bridge/kafka/<version>/libs``, the CLI's default
    state dir is ``$XDG_CACHE_HOME/lark-bridge/run`` (a cluster's: ``…/lark-bridge/cluster``).

Sources:

* KRaft single-node config and ``kafka-storage.sh format``:
  https://kafka.apache.org/documentation/#quickstart and
  https://kafka.apache.org/documentation/#kraft_config
* Kafka wire protocol (ApiVersions key 18, Metadata key 3, request header v1,
  response header v0) used by the readiness probe:
  https://kafka.apache.org/protocol.html
* KIP-896 (Kafka 4.0 removed Metadata v0-v3, hence the probe uses v4):
  https://cwiki.apache.org/confluence/display/KAFKA/KIP-896%3A+Remove+old+client+protocol+API+versions+in+Kafka+4.0

This module only uses the standard library, so the CLI runs without the
project's virtualenv.

Layout: ``fetch`` (versions, cache, Maven), ``probe`` (ports, the wire-protocol readiness probe),
``process`` (:class:`LocalBroker`), ``cluster`` (:class:`LocalCluster`), ``proxy`` (the pausable
TCP proxy in front of a cluster node's inter-broker listener), ``__main__`` (the CLI).
"""

from __future__ import annotations

from bridge_devtools.broker.cluster import LocalCluster, PartitionState, cluster_properties
from bridge_devtools.broker.fetch import (
    DEFAULT_KAFKA_VERSION,
    VERSION_ENV,
    BrokerError,
    cache_root,
    default_cluster_dir,
    default_state_dir,
    fetch,
    kafka_version,
    libs_dir,
)
from bridge_devtools.broker.probe import ProbeResult, free_port, free_ports, probe
from bridge_devtools.broker.process import LocalBroker
from bridge_devtools.broker.proxy import BlackHoleProxy

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "VERSION_ENV",
    "BlackHoleProxy",
    "BrokerError",
    "LocalBroker",
    "LocalCluster",
    "PartitionState",
    "ProbeResult",
    "cache_root",
    "cluster_properties",
    "default_cluster_dir",
    "default_state_dir",
    "fetch",
    "free_port",
    "free_ports",
    "kafka_version",
    "libs_dir",
    "probe",
]
