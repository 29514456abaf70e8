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

    from bridge.devtools.broker import LocalBroker

    with LocalBroker() as broker:          # fresh temp state dir, free ports
        use(broker.bootstrap_servers)      # "127.0.0.1:<port>"
        broker.restart()                   # same port, same data
    # leaving the block stops the JVM and deletes the temp state dir

CLI (``python -m bridge.devtools.broker --help``)::

    python -m bridge.devtools.broker fetch   [--version V]
    python -m bridge.devtools.broker start   [--version V] [--state-dir D] [--port P]
    python -m bridge.devtools.broker stop    [--state-dir D]
    python -m bridge.devtools.broker restart [--state-dir D]
    python -m bridge.devtools.broker status  [--state-dir D]

Environment:

``BRIDGE_DEV_KAFKA_VERSION``
    Kafka version to use when none is passed (default :data:`DEFAULT_KAFKA_VERSION`).
``XDG_CACHE_HOME``
    Cache root (default ``~/.cache``); jars go to
    ``$XDG_CACHE_HOME/lark-bridge/kafka/<version>/libs``, the CLI's default
    state dir is ``$XDG_CACHE_HOME/lark-bridge/run``.

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
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "VERSION_ENV",
    "BrokerError",
    "LocalBroker",
    "ProbeResult",
    "cache_root",
    "default_state_dir",
    "fetch",
    "free_port",
    "kafka_version",
    "libs_dir",
    "probe",
]

#: Kafka version used when neither an argument nor ``$BRIDGE_DEV_KAFKA_VERSION`` is given.
#: Verified with aiokafka 0.14.0 (admin create_topics, idempotent produce with
#: lz4/zstd, consume, broker restart).
DEFAULT_KAFKA_VERSION = "4.1.1"

#: Environment variable overriding :data:`DEFAULT_KAFKA_VERSION`.
VERSION_ENV = "BRIDGE_DEV_KAFKA_VERSION"

POM_PATH = Path(__file__).with_name("kafka-pom.xml")

#: JVM flags tuned for start-up time and footprint on small (2-core) machines,
#: not for throughput. Override per broker with ``LocalBroker(jvm_opts=...)``.
DEFAULT_JVM_OPTS: tuple[str, ...] = (
    "-Xms64m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

_NODE_ID = 1
_COMPLETE_MARKER = ".complete"
_STATE_FILE = "broker.json"
_PID_FILE = "broker.pid"
_BOOTSTRAP_FILE = "bootstrap"


class BrokerError(RuntimeError):
    """Raised when the local broker cannot be fetched, formatted, started or stopped."""


# --------------------------------------------------------------------------
# Versions, cache, fetching
# --------------------------------------------------------------------------


def kafka_version(version: str | None = None) -> str:
    """Return *version*, else ``$BRIDGE_DEV_KAFKA_VERSION``, else :data:`DEFAULT_KAFKA_VERSION`."""
    return version or os.environ.get(VERSION_ENV) or DEFAULT_KAFKA_VERSION


def cache_root() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/lark-bridge`` (not created)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lark-bridge"


def default_state_dir() -> Path:
    """Default state dir of the CLI's daemonized broker: ``<cache_root()>/run``."""
    return cache_root() / "run"


def libs_dir(version: str | None = None) -> Path:
    """Directory holding the broker jars of *version*: ``<cache_root()>/kafka/<version>/libs``."""
    return cache_root() / "kafka" / kafka_version(version) / "libs"


def _is_fetched(libs: Path) -> bool:
    return (libs / _COMPLETE_MARKER).is_file()


def fetch(version: str | None = None, *, timeout_s: float = 1800.0) -> Path:
    """Download the broker jars of *version* from Maven Central, once.

    Runs ``mvn -B -q -f kafka-pom.xml dependency:copy-dependencies
    -DincludeScope=runtime -Dkafka.version=<version>`` into a temporary
    directory, then moves it to :func:`libs_dir` and writes a ``.complete``
    marker. Does nothing if the marker already exists. Concurrent callers
    (e.g. pytest-xdist workers) are serialised with an ``flock``.

    :param version: Kafka version, see :func:`kafka_version`.
    :param timeout_s: limit for the Maven run, in seconds.
    :returns: the libs directory.
    :raises BrokerError: ``mvn`` is missing, fails, or times out.
    """
    version = kafka_version(version)
    libs = libs_dir(version)
    if _is_fetched(libs):
        return libs
    vdir = libs.parent
    vdir.mkdir(parents=True, exist_ok=True)
    with open(vdir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_fetched(libs):
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(
                f"Kafka {version} jars are not cached in {libs} and 'mvn' is not on PATH; "
                "install Maven 3.6.3+ (or copy the jars there and create the .complete marker)"
            )
        tmp = Path(tempfile.mkdtemp(prefix="libs.", dir=vdir))
        cmd = [
            mvn, "-B", "-q", "-Dstyle.color=never",
            "-f", str(POM_PATH),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
            f"-Dkafka.version={version}",
        ]
        try:
            try:
                res = subprocess.run(
                    cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                    timeout=timeout_s, check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise BrokerError(f"mvn did not finish within {timeout_s:.0f}s: {' '.join(cmd)}") from exc
            jars = sorted(p.name for p in tmp.glob("*.jar"))
            if res.returncode != 0 or not any(j.startswith("kafka_2.13-") for j in jars):
                out = (res.stdout + res.stderr).strip()[-4000:]
                raise BrokerError(
                    f"fetching Kafka {version} failed (mvn exit {res.returncode}): {' '.join(cmd)}\n{out}"
                )
            (tmp / _COMPLETE_MARKER).write_text(
                json.dumps({"version": version, "jars": jars, "fetched_at": time.time()}, indent=1)
            )
            if libs.exists():
                shutil.rmtree(libs)
            os.replace(tmp, libs)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return libs


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return os.path.join(home, "bin", "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerError("'java' not found (set JAVA_HOME or put Java 17+ on PATH)")
    return java


# --------------------------------------------------------------------------
# Ports and the stdlib readiness probe
# --------------------------------------------------------------------------


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """*n* distinct TCP ports on *host* that were free a moment ago (all bound at once)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on *host* that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def _request(sock: socket.socket, api_key: int, api_version: int, corr: int, body: bytes) -> bytes:
    """Send one request (header v1) and return the response body (after header v0)."""
    client_id = b"bridge-devtools-probe"
    msg = struct.pack(">hhih", api_key, api_version, corr, len(client_id)) + client_id + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    resp = _recv_exact(sock, size)
    (rcorr,) = struct.unpack_from(">i", resp, 0)
    if rcorr != corr:
        raise ConnectionError(f"correlation id mismatch: sent {corr}, got {rcorr}")
    return resp[4:]


def _read_str(buf: bytes, off: int) -> tuple[str | None, int]:
    (n,) = struct.unpack_from(">h", buf, off)
    off += 2
    if n < 0:
        return None, off
    return buf[off:off + n].decode(), off + n


class ProbeResult(NamedTuple):
    """What :func:`probe` learned from a broker."""

    #: ``cluster.id`` from the Metadata response (``None`` if Metadata v4 is unsupported).
    cluster_id: str | None
    #: ``(node_id, host, port)`` of every live broker in the Metadata response.
    brokers: list[tuple[int, str, int]]


def probe(host: str, port: int, timeout_s: float = 2.0) -> ProbeResult | None:
    """Ask the broker at *host*:*port* for ApiVersions v0, then Metadata v4 with no topics.

    Pure-stdlib implementation of the two requests, used to decide that a
    freshly started broker is serving clients.

    :param timeout_s: socket timeout for connect and each read, in seconds.
    :returns: the cluster id and brokers from the Metadata response
        (``ProbeResult(None, [])`` if the broker answered ApiVersions but does
        not support Metadata v4), or ``None`` if it is not reachable/answering.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            body = _request(sock, 18, 0, 1, b"")
            (err, n) = struct.unpack_from(">hi", body, 0)
            if err != 0:
                return None
            ranges = {}
            for i in range(n):
                k, lo, hi = struct.unpack_from(">hhh", body, 6 + 6 * i)
                ranges[k] = (lo, hi)
            lo, hi = ranges.get(3, (-1, -1))
            if not lo <= 4 <= hi:
                return ProbeResult(None, [])
            # Metadata v4: topics = [] (no topics), allow_auto_topic_creation = false.
            body = _request(sock, 3, 4, 2, struct.pack(">ib", 0, 0))
            off = 4  # throttle_time_ms
            (nb,) = struct.unpack_from(">i", body, off)
            off += 4
            brokers = []
            for _ in range(nb):
                (node_id,) = struct.unpack_from(">i", body, off)
                bhost, off = _read_str(body, off + 4)
                (bport,) = struct.unpack_from(">i", body, off)
                _rack, off = _read_str(body, off + 4)
                brokers.append((node_id, bhost or "", bport))
            cluster_id, off = _read_str(body, off)
            return ProbeResult(cluster_id, brokers)
    except (OSError, struct.error, UnicodeDecodeError):
        return None


# --------------------------------------------------------------------------
# Process helpers
# --------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            # field 3 is the state; "Z" = zombie (exited, not yet reaped)
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _new_cluster_id() -> str:
    """Random Kafka Uuid string (22 chars URL-safe base64), never starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


_LOG4J2_PROPERTIES = """\
# Written by bridge/devtools/broker.py - regenerated on every start.
status = warn
name = bridge-dev-kafka

appender.server.type = File
appender.server.name = SERVER
appender.server.fileName = {logs}/server.log
appender.server.layout.type = PatternLayout
appender.server.layout.pattern = [%d] %p %m (%c)%n

rootLogger.level = INFO
rootLogger.appenderRef.server.ref = SERVER

logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
"""

# Brokers started (attached) by this interpreter, stopped at exit so a crashed
# test run does not leak JVMs.
_ATTACHED: set[LocalBroker] = set()


@atexit.register
def _stop_attached() -> None:
    for broker in list(_ATTACHED):
        with contextlib.suppress(Exception):
            broker.stop(timeout_s=10.0)


# --------------------------------------------------------------------------
# The broker
# --------------------------------------------------------------------------


class LocalBroker:
    """A single-node KRaft Kafka broker+controller listening on 127.0.0.1.

    Layout of *state_dir*: ``config/server.properties``,
    ``config/log4j2.properties``, ``data/`` (``log.dirs``, KRaft metadata
    log), ``logs/server.log`` (Kafka's log4j output), ``logs/stdout.log``
    (JVM stdout/stderr), ``broker.json`` (version and ports, so a later
    ``LocalBroker(state_dir=...)`` or the CLI reuses them), ``broker.pid`` and
    ``bootstrap`` while running.

    :param version: Kafka version (see :func:`kafka_version`). When *state_dir*
        already holds a broker, its recorded version is used if none is given.
    :param state_dir: directory for config, data and logs. Default: a fresh
        ``tempfile.mkdtemp()`` which :meth:`cleanup` (and leaving the ``with``
        block) deletes. A directory you pass is never deleted by this class.
    :param port: PLAINTEXT listener port; default a free port picked at the
        first :meth:`start` (or the one recorded in *state_dir*) and kept
        across :meth:`restart`.
    :param controller_port: CONTROLLER listener port, same rules as *port*.
    :param jvm_opts: JVM flags replacing :data:`DEFAULT_JVM_OPTS`.
    :param auto_create_topics: value of ``auto.create.topics.enable``.
    :param extra_properties: extra/overriding ``server.properties`` entries.
    :param format_args: extra ``kafka-storage format`` arguments (e.g. ``--add-scram …`` to
        create SCRAM users for SASL tests).

    Usable as a context manager: ``__enter__`` calls :meth:`start`,
    ``__exit__`` calls :meth:`stop` and :meth:`cleanup`.
    """

    def __init__(
        self,
        version: str | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        *,
        controller_port: int | None = None,
        jvm_opts: Sequence[str] | None = None,
        auto_create_topics: bool = True,
        extra_properties: Mapping[str, object] | None = None,
        format_args: Sequence[str] = (),
    ) -> None:
        self._owns_state_dir = state_dir is None
        self.state_dir = Path(state_dir if state_dir is not None else tempfile.mkdtemp(prefix="bridge-kafka-"))
        self.state_dir = self.state_dir.absolute()
        recorded = self._read_state()
        self.version = kafka_version(version or recorded.get("version"))
        self.port: int | None = port or recorded.get("port")
        self.controller_port: int | None = controller_port or recorded.get("controller_port")
        self.jvm_opts = tuple(DEFAULT_JVM_OPTS if jvm_opts is None else jvm_opts)
        self.auto_create_topics = auto_create_topics
        self.extra_properties = dict(extra_properties or {})
        self.format_args = tuple(format_args)
        self._proc: subprocess.Popen[bytes] | None = None
        #: Seconds the last successful :meth:`start` took (JVM launch to broker answering Metadata).
        self.last_start_s: float | None = None

    # -- paths and properties ------------------------------------------------

    @property
    def config_path(self) -> Path:
        """``<state_dir>/config/server.properties``."""
        return self.state_dir / "config" / "server.properties"

    @property
    def data_dir(self) -> Path:
        """``<state_dir>/data`` (``log.dirs``)."""
        return self.state_dir / "data"

    @property
    def log_path(self) -> Path:
        """Kafka's own log file, ``<state_dir>/logs/server.log``."""
        return self.state_dir / "logs" / "server.log"

    @property
    def stdout_path(self) -> Path:
        """JVM stdout/stderr, ``<state_dir>/logs/stdout.log``."""
        return self.state_dir / "logs" / "stdout.log"

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:<port>"``.

        :raises BrokerError: no port chosen yet (call :meth:`start` first or pass *port*).
        """
        if self.port is None:
            raise BrokerError("broker port not chosen yet; call start() first")
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the running broker JVM (also its process-group id), else ``None``."""
        if self._proc is not None:
            return self._proc.pid if self._proc.poll() is None else None
        pid = self._read_pid()
        return pid if pid is not None and self._is_our_pid(pid) else None

    def cluster_id(self) -> str | None:
        """The ``cluster.id`` written by the storage format (``data/meta.properties``), else ``None``."""
        try:
            for line in (self.data_dir / "meta.properties").read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
        except OSError:
            pass
        return None

    def is_running(self) -> bool:
        """True if the broker JVM of this state dir is alive (says nothing about readiness)."""
        return self.pid is not None

    def rss_bytes(self) -> int | None:
        """Resident set size of the broker JVM in bytes (Linux ``/proc``), else ``None``."""
        pid = self.pid
        if pid is None:
            return None
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    # -- state files ---------------------------------------------------------

    def _read_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads((self.state_dir / _STATE_FILE).read_text())
            return state
        except (OSError, ValueError):
            return {}

    def _write_state(self) -> None:
        (self.state_dir / _STATE_FILE).write_text(json.dumps(
            {"version": self.version, "port": self.port, "controller_port": self.controller_port},
            indent=1,
        ))

    def _read_pid(self) -> int | None:
        try:
            return int((self.state_dir / _PID_FILE).read_text().strip())
        except (OSError, ValueError):
            return None

    def _is_our_pid(self, pid: int) -> bool:
        if not _pid_alive(pid):
            return False
        cmd = _cmdline(pid)
        if cmd is None:  # no /proc: trust the pid file
            return True
        return "kafka.Kafka" in cmd and str(self.config_path) in cmd

    def _clear_run_files(self) -> None:
        for name in (_PID_FILE, _BOOTSTRAP_FILE):
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / name).unlink()

    # -- configuration -------------------------------------------------------

    def server_properties(self) -> dict[str, str]:
        """The ``server.properties`` entries :meth:`start` writes (ports must be chosen)."""
        assert self.port is not None and self.controller_port is not None
        props: dict[str, object] = {
            "process.roles": "broker,controller",
            "node.id": _NODE_ID,
            "controller.quorum.voters": f"{_NODE_ID}@127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": 1,
            "default.replication.factor": 1,
            "min.insync.replicas": 1,
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            # A restarted (new incarnation) broker cannot re-register until the old
            # session expires (always after a SIGKILL; also after SIGTERM on 4.0.x).
            # Defaults 2000/9000 ms made those restarts take ~12 s instead of ~4.5 s.
            "broker.heartbeat.interval.ms": 500,
            "broker.session.timeout.ms": 3000,
            "auto.create.topics.enable": str(self.auto_create_topics).lower(),
            "num.network.threads": 2,
            "num.io.threads": 2,
            "num.recovery.threads.per.data.dir": 1,
            "log.retention.check.interval.ms": 300000,
        }
        props.update(self.extra_properties)
        return {k: str(v) for k, v in props.items()}

    def _write_config(self) -> None:
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        lines = ["# Written by bridge/devtools/broker.py - regenerated on every start."]
        lines += [f"{k}={v}" for k, v in self.server_properties().items()]
        self.config_path.write_text("\n".join(lines) + "\n")
        (self.config_path.parent / "log4j2.properties").write_text(
            _LOG4J2_PROPERTIES.format(logs=self.state_dir / "logs")
        )

    def _java_cmd(self, libs: Path, main: str, *args: str) -> list[str]:
        return [
            _java(),
            *self.jvm_opts,
            f"-Dlog4j2.configurationFile={self.config_path.parent / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.state_dir / 'logs'}",
            # Log4j's own shutdown hook would race Kafka's and drop the shutdown log.
            "-Dlog4j2.shutdownHookEnabled=false",
            "-cp", f"{libs}/*",
            main, *args,
        ]

    def _format_storage(self, libs: Path) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = self._java_cmd(
            libs, "kafka.tools.StorageTool",
            "format", "-t", _new_cluster_id(), "-c", str(self.config_path), *self.format_args,
        )
        try:
            res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"kafka-storage format timed out: {' '.join(cmd)}") from exc
        if res.returncode != 0:
            raise BrokerError(
                f"kafka-storage format failed (exit {res.returncode}): {' '.join(cmd)}\n"
                f"{(res.stdout + res.stderr).strip()[-4000:]}"
            )

    # -- lifecycle -------------------------------------------------------------

    def start(self, timeout_s: float = 60.0, *, detach: bool = False) -> float:
        """Fetch jars if needed, format storage on first use, launch the JVM, wait until ready.

        The JVM runs in its own session/process group with stdout/stderr
        appended to :attr:`stdout_path`. "Ready" means the PLAINTEXT listener
        answers an ApiVersions and a Metadata request listing this broker at
        its advertised address, with the cluster id of our ``data/`` dir (so a
        foreign broker squatting on the port is detected; see :func:`probe`).

        :param timeout_s: seconds to wait for readiness (excluding a first-time
            jar download, which has its own limit, see :func:`fetch`).
        :param detach: if true, the JVM is not stopped when this Python
            process exits (used by the CLI's ``start``).
        :returns: seconds from JVM launch to readiness (also stored in :attr:`last_start_s`).
        :raises BrokerError: already running, Java/Maven missing, jar download
            or storage format failure, data dir formatted by another Kafka
            version, JVM exit during start-up, port served by another
            cluster, or not ready within *timeout_s*
            (the JVM is then killed). The message includes the log tail.
        """
        if self.is_running():
            raise BrokerError(f"a broker is already running for {self.state_dir} (pid {self.pid})")
        recorded = self._read_state().get("version")
        if recorded and recorded != self.version and (self.data_dir / "meta.properties").exists():
            raise BrokerError(
                f"{self.data_dir} was created by Kafka {recorded}, not {self.version}; "
                "use that version or remove the state dir (CLI: start --reset)"
            )
        libs = fetch(self.version)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        if self.controller_port is None:
            self.controller_port = free_port()
            while self.controller_port == self.port:
                self.controller_port = free_port()
        self._write_config()
        self._write_state()
        self._format_storage(libs)
        cluster_id = self.cluster_id()

        cmd = self._java_cmd(libs, "kafka.Kafka", str(self.config_path))
        t0 = time.monotonic()
        with open(self.stdout_path, "ab") as out:
            out.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.state_dir, start_new_session=True, close_fds=True,
            )
        (self.state_dir / _PID_FILE).write_text(f"{self._proc.pid}\n")
        if not detach:
            _ATTACHED.add(self)

        deadline = t0 + timeout_s
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                self._clear_run_files()
                _ATTACHED.discard(self)
                raise BrokerError(f"Kafka {self.version} exited with code {code} during start-up\n{self._log_tails()}")
            res = probe("127.0.0.1", self.port, timeout_s=1.0)
            if res is not None and res.cluster_id is None:
                break  # answers ApiVersions, Metadata v4 unsupported: good enough
            if res is not None and res.cluster_id != cluster_id:
                self._kill(signal.SIGKILL, 10.0)
                raise BrokerError(
                    f"port {self.port} is served by another Kafka cluster ({res.cluster_id}), not ours "
                    f"({cluster_id}); is another broker using it?"
                )
            if res is not None and (_NODE_ID, "127.0.0.1", self.port) in res.brokers:
                break
            if time.monotonic() > deadline:
                self._kill(signal.SIGKILL, 10.0)
                raise BrokerError(
                    f"Kafka {self.version} not ready on {self.bootstrap_servers} within {timeout_s:.0f}s\n"
                    f"{self._log_tails()}"
                )
            time.sleep(0.1)
        self.last_start_s = time.monotonic() - t0
        (self.state_dir / _BOOTSTRAP_FILE).write_text(self.bootstrap_servers + "\n")
        if detach:
            _ATTACHED.discard(self)
            self._proc = None  # forget the handle; the pid file identifies the JVM from now on
        return self.last_start_s

    def _log_tails(self) -> str:
        errors = [
            line[:500] for line in _tail(self.log_path, 2000).splitlines()
            if "] ERROR " in line or "] FATAL " in line
        ]
        return (
            f"--- ERROR/FATAL lines of {self.log_path} (last 10) ---\n" + "\n".join(errors[-10:]) + "\n"
            f"--- {self.stdout_path} (tail) ---\n{_tail(self.stdout_path, 20)}\n"
            f"--- {self.log_path} (tail) ---\n{_tail(self.log_path, 20)}"
        )

    def _kill(self, sig: int, wait_s: float) -> bool:
        """Send *sig* to the broker's process group; True if it exited within *wait_s* seconds."""
        pid = self.pid
        if pid is None:
            self._proc = None
            self._clear_run_files()
            _ATTACHED.discard(self)
            return True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self._proc is not None:
                try:
                    self._proc.wait(timeout=0.1)
                except subprocess.TimeoutExpired:
                    continue
                break
            if not _pid_alive(pid):
                break
            time.sleep(0.1)
        else:
            return False
        self._proc = None
        self._clear_run_files()
        _ATTACHED.discard(self)
        return True

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the broker: SIGTERM (Kafka's controlled shutdown), then SIGKILL.

        Data, config and ports are kept, so :meth:`start`/:meth:`restart`
        brings back the same broker. No-op if it is not running.

        :param timeout_s: seconds to wait after SIGTERM before SIGKILL.
        :raises BrokerError: the JVM survived SIGKILL for 10 seconds.
        """
        if self._kill(signal.SIGTERM, timeout_s):
            return
        if not self._kill(signal.SIGKILL, 10.0):
            raise BrokerError(f"broker pid {self.pid} did not die after SIGKILL")

    def kill(self) -> None:
        """SIGKILL the broker (simulated crash: no controlled shutdown, no producer-state snapshot).

        Data and ports are kept; :meth:`start` recovers the logs.

        :raises BrokerError: the JVM survived SIGKILL for 10 seconds.
        """
        if not self._kill(signal.SIGKILL, 10.0):
            raise BrokerError(f"broker pid {self.pid} did not die after SIGKILL")

    def restart(self, timeout_s: float = 60.0, *, stop_timeout_s: float = 30.0, detach: bool = False) -> float:
        """:meth:`stop` then :meth:`start` on the same ports with the same data.

        :returns: seconds the start took. :raises BrokerError: as :meth:`stop`/:meth:`start`.
        """
        self.stop(stop_timeout_s)
        return self.start(timeout_s, detach=detach)

    def cleanup(self) -> None:
        """Stop the broker and delete *state_dir* if this object created it (temp dir)."""
        self.stop()
        if self._owns_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
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
            f"LocalBroker(version={self.version!r}, state_dir={str(self.state_dir)!r}, "
            f"port={self.port!r}, running={self.is_running()})"
        )


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bridge.devtools.broker",
        description="Fetch and run a single-node KRaft Kafka broker on 127.0.0.1 (no Docker).",
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--version", help=f"Kafka version (default ${VERSION_ENV} or {DEFAULT_KAFKA_VERSION}; "
                                          "for an existing state dir, the version it was created with)")
        sp.add_argument("--state-dir", type=Path, default=None,
                        help=f"config/data/log dir (default {default_state_dir()})")
        sp.add_argument("--port", type=int, default=None, help="PLAINTEXT port (default: free port, then kept)")
        sp.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness (default 60)")

    f = sub.add_parser("fetch", help="download the jars of a Kafka version into the cache")
    f.add_argument("--version", help=f"Kafka version (default ${VERSION_ENV} or {DEFAULT_KAFKA_VERSION})")
    s = sub.add_parser("start", help="start a detached broker and print its bootstrap servers")
    common(s)
    s.add_argument("--reset", action="store_true", help="delete the state dir's data/config first")
    common(sub.add_parser("restart", help="stop and start again (same port and data)"))
    common(sub.add_parser("stop", help="stop the broker of the state dir"))
    common(sub.add_parser("status", help="print bootstrap servers if running; exit 1 if not"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit status (errors are printed, status 2)."""
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "fetch":
            t0 = time.monotonic()
            libs = fetch(args.version)
            print(f"{libs}  ({time.monotonic() - t0:.1f}s)", file=sys.stderr)
            return 0
        state_dir = args.state_dir or default_state_dir()
        if args.cmd == "start" and args.reset:
            if LocalBroker(state_dir=state_dir).is_running():
                raise BrokerError(f"broker in {state_dir} is running; stop it before --reset")
            for name in ("data", "config", _STATE_FILE):
                path = state_dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        broker = LocalBroker(version=args.version, state_dir=state_dir, port=args.port)
        if args.cmd == "start":
            if broker.is_running():
                running = broker._read_state().get("version", "?")
                print(f"Kafka {running} already running (pid {broker.pid})", file=sys.stderr)
            else:
                secs = broker.start(args.timeout, detach=True)
                print(f"Kafka {broker.version} started in {secs:.1f}s (pid {broker.pid}); "
                      f"logs: {broker.log_path}", file=sys.stderr)
            print(broker.bootstrap_servers)
            return 0
        if args.cmd == "stop":
            was = broker.pid
            broker.stop()
            print("stopped" if was else "not running", file=sys.stderr)
            return 0
        if args.cmd == "restart":
            secs = broker.restart(args.timeout, detach=True)
            print(f"Kafka {broker.version} restarted in {secs:.1f}s (pid {broker.pid})", file=sys.stderr)
            print(broker.bootstrap_servers)
            return 0
        if args.cmd == "status":
            if not broker.is_running():
                print(f"not running (state dir {state_dir})", file=sys.stderr)
                return 1
            rss = broker.rss_bytes()
            print(f"Kafka {broker.version} running, pid {broker.pid}, "
                  f"rss {rss / 2**20:.0f} MiB" if rss else f"Kafka {broker.version} running, pid {broker.pid}",
                  file=sys.stderr)
            print(broker.bootstrap_servers)
            return 0
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    raise AssertionError(args.cmd)


if __name__ == "__main__":
    sys.exit(main())
