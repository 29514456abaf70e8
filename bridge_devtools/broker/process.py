"""The broker process: :class:`LocalBroker` (config, storage format, start/stop/restart/pause, state files).

A :class:`LocalBroker` is one KRaft node (broker+controller). Alone it is a one-voter cluster;
:class:`~bridge_devtools.broker.cluster.LocalCluster` runs several of them with a shared cluster
id and quorum (``node_id``, ``quorum_voters``, ``cluster_id``).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from bridge_devtools.broker.fetch import (
    _BOOTSTRAP_FILE,
    _NODE_ID,
    _PID_FILE,
    _STATE_FILE,
    DEFAULT_JVM_OPTS,
    BrokerError,
    _java,
    fetch,
    kafka_version,
)
from bridge_devtools.broker.probe import free_port, probe

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
    return _proc_state(pid) != "Z"  # zombie: exited, not yet reaped (no /proc: trust kill(0))


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


def _proc_state(pid: int) -> str | None:
    """The state letter of ``/proc/<pid>/stat`` (``R``, ``S``, ``T`` stopped, ``Z`` …), else ``None``."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _new_cluster_id() -> str:
    """Random Kafka Uuid string (22 chars URL-safe base64), never starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


_LOG4J2_PROPERTIES = """\
# Written by bridge_devtools/broker/process.py - regenerated on every start.
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
    :param replication_port: if given, a third listener, ``REPLICATION`` on this port, carries
        the inter-broker traffic (``inter.broker.listener.name``: followers' fetches, the
        transaction coordinator's markers) instead of PLAINTEXT; clients keep PLAINTEXT and the
        quorum CONTROLLER. Default (``None``, or the one recorded in *state_dir*): no such
        listener, inter-broker traffic on PLAINTEXT, as a single broker always had.
    :param replication_advertised_port: the port advertised for ``REPLICATION`` (where the other
        brokers connect), e.g. a proxy's in front of *replication_port*; default
        *replication_port* itself. Not recorded: set it again before each :meth:`start`.
    :param node_id: the KRaft ``node.id`` (default 1, or the one recorded in *state_dir*).
    :param quorum_voters: ``{node id: CONTROLLER port}`` of every voter of the quorum, all on
        127.0.0.1 (``controller.quorum.voters``, a static quorum, which Kafka 3.9 and 4.x both
        accept). Default: this node alone. Recorded in *state_dir* like the ports.
    :param cluster_id: the cluster id the first :meth:`start` formats ``data/`` with (default: a
        fresh random one). Nodes of one cluster must share it.
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
        replication_port: int | None = None,
        replication_advertised_port: int | None = None,
        node_id: int | None = None,
        quorum_voters: Mapping[int, int] | None = None,
        cluster_id: str | None = None,
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
        #: Port of the ``REPLICATION`` (inter-broker) listener; ``None``: inter-broker on PLAINTEXT.
        self.replication_port: int | None = replication_port or recorded.get("replication_port")
        #: Port advertised for ``REPLICATION``; ``None``: :attr:`replication_port` itself.
        self.replication_advertised_port: int | None = replication_advertised_port
        self.node_id: int = node_id or recorded.get("node_id") or _NODE_ID
        voters = quorum_voters or {int(k): int(v) for k, v in (recorded.get("quorum_voters") or {}).items()}
        #: ``{node id: CONTROLLER port}``; empty means "this node alone" (see :meth:`server_properties`).
        self.quorum_voters: dict[int, int] = dict(voters)
        self._format_cluster_id = cluster_id
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
        (self.state_dir / _STATE_FILE).write_text(
            json.dumps(
                {
                    "version": self.version,
                    "port": self.port,
                    "controller_port": self.controller_port,
                    "replication_port": self.replication_port,
                    "node_id": self.node_id,
                    "quorum_voters": {str(k): v for k, v in self.quorum_voters.items()},
                },
                indent=1,
            )
        )

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
        voters = self.quorum_voters or {self.node_id: self.controller_port}
        listeners = f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
        advertised = f"PLAINTEXT://127.0.0.1:{self.port}"
        inter_broker = "PLAINTEXT"
        protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        if self.replication_port is not None:
            listeners += f",REPLICATION://127.0.0.1:{self.replication_port}"
            advertised += f",REPLICATION://127.0.0.1:{self.replication_advertised_port or self.replication_port}"
            inter_broker = "REPLICATION"
            protocols += ",REPLICATION:PLAINTEXT"
        props: dict[str, object] = {
            "process.roles": "broker,controller",
            "node.id": self.node_id,
            "controller.quorum.voters": ",".join(f"{n}@127.0.0.1:{p}" for n, p in sorted(voters.items())),
            "controller.listener.names": "CONTROLLER",
            "listeners": listeners,
            "advertised.listeners": advertised,
            "inter.broker.listener.name": inter_broker,
            "listener.security.protocol.map": protocols,
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
        lines = ["# Written by bridge_devtools/broker/process.py - regenerated on every start."]
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
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def _format_storage(self, libs: Path) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = self._java_cmd(
            libs,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            self._format_cluster_id or _new_cluster_id(),
            "-c",
            str(self.config_path),
            *self.format_args,
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
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=True,
                close_fds=True,
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
                raise BrokerError(f"Kafka {self.version} exited with code {code} during start-up\n{self.log_tails()}")
            res = probe("127.0.0.1", self.port, timeout_s=1.0)
            if res is not None and res.cluster_id is None:
                break  # answers ApiVersions, Metadata v4 unsupported: good enough
            if res is not None and res.cluster_id != cluster_id:
                self._kill(signal.SIGKILL, 10.0)
                raise BrokerError(
                    f"port {self.port} is served by another Kafka cluster ({res.cluster_id}), not ours "
                    f"({cluster_id}); is another broker using it?"
                )
            if res is not None and (self.node_id, "127.0.0.1", self.port) in res.brokers:
                break
            if time.monotonic() > deadline:
                self._kill(signal.SIGKILL, 10.0)
                raise BrokerError(
                    f"Kafka {self.version} not ready on {self.bootstrap_servers} within {timeout_s:.0f}s\n"
                    f"{self.log_tails()}"
                )
            time.sleep(0.1)
        self.last_start_s = time.monotonic() - t0
        (self.state_dir / _BOOTSTRAP_FILE).write_text(self.bootstrap_servers + "\n")
        if detach:
            _ATTACHED.discard(self)
            self._proc = None  # forget the handle; the pid file identifies the JVM from now on
        return self.last_start_s

    def log_tails(self) -> str:
        """ERROR/FATAL lines and the tails of :attr:`log_path` and :attr:`stdout_path` (for error messages)."""
        errors = [
            line[:500] for line in _tail(self.log_path, 2000).splitlines() if "] ERROR " in line or "] FATAL " in line
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
            if sig != signal.SIGKILL:
                # A paused (SIGSTOPped) JVM handles the signal only once it runs again.
                os.killpg(pid, signal.SIGCONT)
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
        """Stop the broker: SIGTERM (Kafka's controlled shutdown), then SIGKILL. A paused broker is resumed.

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

    def pause(self, timeout_s: float = 5.0) -> None:
        """SIGSTOP the broker (a hung node: its sockets stay open and accept, nothing answers).

        Returns once the JVM is stopped. :meth:`resume` continues it; :meth:`stop` resumes it first.

        :raises BrokerError: not running, or not stopped within *timeout_s* seconds.
        """
        self._signal_and_wait(signal.SIGSTOP, stopped=True, timeout_s=timeout_s)

    def resume(self, timeout_s: float = 5.0) -> None:
        """SIGCONT a paused broker (no-op if it is running). :raises BrokerError: as :meth:`pause`."""
        self._signal_and_wait(signal.SIGCONT, stopped=False, timeout_s=timeout_s)

    def is_paused(self) -> bool:
        """True if the broker JVM is alive and stopped by a signal (:meth:`pause`)."""
        pid = self.pid
        return pid is not None and _proc_state(pid) in ("T", "t")

    def _signal_and_wait(self, sig: int, *, stopped: bool, timeout_s: float) -> None:
        pid = self.pid
        if pid is None:
            raise BrokerError(f"no broker is running for {self.state_dir}")
        os.killpg(pid, sig)
        deadline = time.monotonic() + timeout_s
        while self.is_paused() != stopped:
            if time.monotonic() > deadline:
                raise BrokerError(f"broker pid {pid} not {'paused' if stopped else 'resumed'} within {timeout_s:.0f}s")
            time.sleep(0.01)

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
            f"node_id={self.node_id!r}, port={self.port!r}, running={self.is_running()})"
        )
