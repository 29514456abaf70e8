"""The registry process: :class:`LocalRegistry` (command line, start/stop, readiness, state files, CDS archive)."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from bridge_devtools.broker.probe import free_port
from bridge_devtools.broker.process import _cmdline, _pid_alive, _tail
from bridge_devtools.registry.fetch import (
    _PID_FILE,
    _RUNNER_JAR,
    _STATE_FILE,
    _URL_FILE,
    DEFAULT_JVM_OPTS,
    Java,
    RegistryError,
    fetch,
    find_java,
    registry_version,
    version_dir,
)
from bridge_devtools.registry.probe import CCOMPAT_PATH, probe

#: Compatibility levels of the Confluent Schema Registry API, accepted by ``LocalRegistry(compatibility=)``.
#: https://docs.confluent.io/platform/current/schema-registry/fundamentals/schema-evolution.html#compatibility-types
COMPATIBILITY_LEVELS = frozenset(
    {
        "BACKWARD",
        "BACKWARD_TRANSITIVE",
        "FORWARD",
        "FORWARD_TRANSITIVE",
        "FULL",
        "FULL_TRANSITIVE",
        "NONE",
    }
)

# System property naming the state dir on the JVM's command line, so the pid file's process can
# be told apart from any other registry (or a recycled pid). Unknown to Quarkus and ignored.
_MARKER_PROPERTY = "bridge.devtools.registry.state-dir"

# Quarkus log lines at ERROR/FATAL level, and exception/cause lines of stack traces (not "\tat ..." frames).
_ERROR_LINE = re.compile(r" (ERROR|FATAL) |^(Caused by: |Exception\b|\S+(Exception|Error)(: |$))")

# Logged by io.quarkus.runtime.ApplicationLifecycleManager when start-up throws.
_FAILED_START = b"Failed to start application"

# Dynamic CDS archive written by a JVM started without a cached archive, at its exit.
_CDS_DUMP = "cds-dump.jsa"
# First 4 bytes of a dynamic CDS archive (magic 0xf00baba8, little-endian on x86-64/aarch64).
_CDS_MAGIC = (0xF00BABA8).to_bytes(4, "little")

# Registries started (attached) by this interpreter, stopped at exit so a crashed
# test run does not leak JVMs.
_ATTACHED: set[LocalRegistry] = set()


@atexit.register
def _stop_attached() -> None:
    for registry in list(_ATTACHED):
        with contextlib.suppress(Exception):
            registry.stop(timeout_s=10.0)


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on *host*:*port* (SO_REUSEADDR, as Vert.x binds: TIME_WAIT leftovers don't count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


# --------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------


class LocalRegistry:
    """An Apicurio Registry (in-memory H2 storage) listening on 127.0.0.1, used through its
    Confluent-compatible API.

    Storage is in memory: :meth:`stop` forgets every schema (and ids start again at 1).

    Layout of *state_dir*: ``logs/registry.log`` (JVM stdout/stderr, i.e. Quarkus's console log
    and the HTTP access log), ``registry.json`` (version, ports and compatibility, so a later
    ``LocalRegistry(state_dir=...)`` or the CLI reuses the ports), ``registry.pid`` and ``url``
    while running, and ``cds-dump.jsa`` while a first run records the class-data-sharing archive.

    Start-up, measured on 2 cores with Temurin 25 and registry 3.3.3 (medians of 5): 3.5 s with the
    cached class-data-sharing (CDS) archive, 5.5 s without it (the first start of a version/Java/flags
    combination, whose :meth:`stop` then takes about 3 s more while the JVM writes the archive);
    RSS about 260-280 MiB.

    :param version: Apicurio Registry version (see :func:`registry_version`). When *state_dir*
        already holds a registry, its recorded version is used if none is given.
    :param state_dir: directory for logs and state files. Default: a fresh ``tempfile.mkdtemp()``
        which :meth:`cleanup` (and leaving the ``with`` block) deletes. A directory you pass is
        never deleted by this class.
    :param port: main HTTP port (REST APIs, ``/apis/ccompat/v7``); default a free port picked at
        the first :meth:`start` (or the one recorded in *state_dir*) and kept afterwards.
    :param management_port: Quarkus management port (``/health/ready``), same rules as *port*.
    :param compatibility: global compatibility level (``apicurio.rules.global.compatibility``),
        one of :data:`COMPATIBILITY_LEVELS`. Default ``BACKWARD``, Confluent Schema Registry's
        default; Apicurio's own default would be ``NONE`` (no check at all).
    :param jvm_opts: JVM flags replacing :data:`DEFAULT_JVM_OPTS`.
    :param cds: use (and on first use record) a dynamic class-data-sharing archive in
        ``<version_dir>/cds/`` (JDK 13+ ``-XX:ArchiveClassesAtExit`` / ``-XX:SharedArchiveFile``,
        https://docs.oracle.com/en/java/javase/21/vm/class-data-sharing.html); it halves start-up.
        A stale or mismatched archive is ignored by the JVM with a warning in the log.
    :param extra_properties: extra/overriding ``-D`` system properties (Quarkus/Apicurio config,
        e.g. ``{"apicurio.rest.deletion.artifact.enabled": "true"}``).

    Usable as a context manager: ``__enter__`` calls :meth:`start`,
    ``__exit__`` calls :meth:`stop` and :meth:`cleanup`.
    """

    def __init__(
        self,
        version: str | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        management_port: int | None = None,
        compatibility: str = "BACKWARD",
        *,
        jvm_opts: Sequence[str] | None = None,
        cds: bool = True,
        extra_properties: Mapping[str, object] | None = None,
    ) -> None:
        if compatibility.upper() not in COMPATIBILITY_LEVELS:
            raise ValueError(f"compatibility {compatibility!r} is not one of {', '.join(sorted(COMPATIBILITY_LEVELS))}")
        self._owns_state_dir = state_dir is None
        self.state_dir = Path(state_dir if state_dir is not None else tempfile.mkdtemp(prefix="bridge-registry-"))
        self.state_dir = self.state_dir.absolute()
        recorded = self._read_state()
        self.version = registry_version(version or recorded.get("version"))
        self.port: int | None = port or recorded.get("port")
        self.management_port: int | None = management_port or recorded.get("management_port")
        self.compatibility = compatibility.upper()
        self.jvm_opts = tuple(DEFAULT_JVM_OPTS if jvm_opts is None else jvm_opts)
        self.cds = cds
        self.extra_properties = dict(extra_properties or {})
        self._proc: subprocess.Popen[bytes] | None = None
        #: Seconds the last successful :meth:`start` took (JVM launch to ``/health/ready`` UP and the API answering).
        self.last_start_s: float | None = None

    # -- paths and properties ------------------------------------------------

    @property
    def log_path(self) -> Path:
        """JVM stdout/stderr (Quarkus logs to the console), ``<state_dir>/logs/registry.log``."""
        return self.state_dir / "logs" / "registry.log"

    @property
    def url(self) -> str:
        """Base URL of the Confluent-compatible API, ``"http://127.0.0.1:<port>/apis/ccompat/v7"``.

        :raises RegistryError: no port chosen yet (call :meth:`start` first or pass *port*).
        """
        return self.base_url + CCOMPAT_PATH

    @property
    def base_url(self) -> str:
        """``"http://127.0.0.1:<port>"`` (Apicurio's own API is under ``/apis/registry/v3``).

        :raises RegistryError: no port chosen yet.
        """
        if self.port is None:
            raise RegistryError("registry port not chosen yet; call start() first")
        return f"http://127.0.0.1:{self.port}"

    @property
    def management_url(self) -> str:
        """``"http://127.0.0.1:<management_port>"`` (``/health/ready``, ``/health/live``, ``/metrics``).

        :raises RegistryError: no management port chosen yet.
        """
        if self.management_port is None:
            raise RegistryError("registry management port not chosen yet; call start() first")
        return f"http://127.0.0.1:{self.management_port}"

    @property
    def pid(self) -> int | None:
        """PID of the running registry JVM (also its process-group id), else ``None``."""
        if self._proc is not None:
            return self._proc.pid if self._proc.poll() is None else None
        pid = self._read_pid()
        return pid if pid is not None and self._is_our_pid(pid) else None

    def is_running(self) -> bool:
        """True if the registry JVM of this state dir is alive (says nothing about readiness)."""
        return self.pid is not None

    def rss_bytes(self) -> int | None:
        """Resident set size of the registry JVM in bytes (Linux ``/proc``), else ``None``."""
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
        except (OSError, ValueError):
            return {}
        return state

    def _write_state(self, cds_dump_to: Path | None = None) -> None:
        (self.state_dir / _STATE_FILE).write_text(
            json.dumps(
                {
                    "version": self.version,
                    "port": self.port,
                    "management_port": self.management_port,
                    "compatibility": self.compatibility,
                    # Where stop() moves cds-dump.jsa once the JVM has exited cleanly.
                    "cds_dump_to": str(cds_dump_to) if cds_dump_to else None,
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
        return f"-D{_MARKER_PROPERTY}={self.state_dir}" in cmd

    def _clear_run_files(self) -> None:
        for name in (_PID_FILE, _URL_FILE):
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / name).unlink()

    # -- command line ----------------------------------------------------------

    def system_properties(self) -> dict[str, str]:
        """The ``-D`` properties :meth:`start` passes (ports must be chosen).

        Quarkus HTTP and management interfaces bound to 127.0.0.1
        (https://quarkus.io/guides/http-reference, https://quarkus.io/guides/management-interface-reference)
        and Apicurio's global compatibility rule; storage is Apicurio 3's default, SQL on in-memory H2.
        """
        assert self.port is not None
        assert self.management_port is not None
        props: dict[str, object] = {
            "quarkus.http.host": "127.0.0.1",
            "quarkus.http.port": self.port,
            "quarkus.management.host": "127.0.0.1",
            "quarkus.management.port": self.management_port,
            "apicurio.rules.global.compatibility": self.compatibility,
            **self.extra_properties,
            _MARKER_PROPERTY: self.state_dir,
        }
        return {k: str(v) for k, v in props.items()}

    def _cds_archive(self, java: Java) -> Path:
        """Cached CDS archive for this version, Java build and JVM flags (``<version_dir>/cds/<key>.jsa``)."""
        try:
            mtime = os.stat(java.path).st_mtime_ns
        except OSError:
            mtime = 0
        key = hashlib.sha256(f"{java.path}|{java.version}|{mtime}|{' '.join(self.jvm_opts)}".encode()).hexdigest()
        return version_dir(self.version) / "cds" / f"{key[:16]}.jsa"

    def _java_cmd(self, app: Path, java: Java, cds_flag: Sequence[str]) -> list[str]:
        return [
            java.path,
            *self.jvm_opts,
            *cds_flag,
            *(f"-D{k}={v}" for k, v in self.system_properties().items()),
            "-jar",
            str(app / _RUNNER_JAR),
        ]

    def _finish_cds_dump(self, *, keep: bool) -> None:
        """Move a complete ``cds-dump.jsa`` into the cache (atomic rename), or delete it."""
        dump = self.state_dir / _CDS_DUMP
        target = self._read_state().get("cds_dump_to")
        try:
            with open(dump, "rb") as f:
                complete = f.read(4) == _CDS_MAGIC
        except OSError:
            return
        if keep and complete and target:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            os.replace(dump, target)
        else:
            dump.unlink(missing_ok=True)

    # -- lifecycle -------------------------------------------------------------

    def start(self, timeout_s: float = 90.0, *, detach: bool = False) -> float:
        """Fetch the distribution if needed, launch the JVM, wait until ready.

        The JVM runs in its own session/process group with stdout/stderr appended to
        :attr:`log_path`. "Ready" means ``/health/ready`` on the management port says ``UP``, the
        main port's ``/apis/registry/v3/system/info`` names Apicurio Registry of our version, and
        ``/apis/ccompat/v7/config`` reports our compatibility level (see :func:`probe`).

        :param timeout_s: seconds to wait for readiness (excluding a first-time download, which
            has its own limit, see :func:`fetch`).
        :param detach: if true, the JVM is not stopped when this Python process exits (used by
            the CLI's ``start``).
        :returns: seconds from JVM launch to readiness (also stored in :attr:`last_start_s`).
        :raises RegistryError: already running, no Java 21+ or Maven, download failure, a port
            already in use, JVM exit during start-up, port served by another registry, or not
            ready within *timeout_s* (the JVM is then killed). The message includes the log tail.
        """
        if self.is_running():
            raise RegistryError(f"a registry is already running for {self.state_dir} (pid {self.pid})")
        java = find_java()
        app = fetch(self.version)
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        if self.management_port is None:
            self.management_port = free_port()
            while self.management_port == self.port:
                self.management_port = free_port()
        for name, port in (("port", self.port), ("management port", self.management_port)):
            if not _port_free(port):
                raise RegistryError(f"registry {name} {port} on 127.0.0.1 is in use (another registry?)")

        cds_flag: list[str] = []
        cds_dump_to: Path | None = None
        (self.state_dir / _CDS_DUMP).unlink(missing_ok=True)
        if self.cds:
            archive = self._cds_archive(java)
            if archive.is_file():
                cds_flag = [f"-XX:SharedArchiveFile={archive}"]
            else:
                cds_flag = [f"-XX:ArchiveClassesAtExit={self.state_dir / _CDS_DUMP}"]
                cds_dump_to = archive
        self._write_state(cds_dump_to)

        cmd = self._java_cmd(app, java, cds_flag)
        t0 = time.monotonic()
        with open(self.log_path, "ab") as out:
            out.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
            out.flush()
            log_offset = out.tell()
            self._proc = subprocess.Popen(  # noqa: S603 (argument list built here, no shell)
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
                self._finish_cds_dump(keep=False)
                _ATTACHED.discard(self)
                raise RegistryError(
                    f"Apicurio Registry {self.version} exited with code {code} during start-up "
                    f"(java {java.version}: {java.path})\n{self._log_tails()}"
                )
            res = probe("127.0.0.1", self.port, self.management_port, timeout_s=1.0)
            if res is not None:
                if "Apicurio Registry" not in res.name or res.version != self.version:
                    self._kill(signal.SIGKILL, 10.0)
                    raise RegistryError(
                        f"port {self.port} is served by {res.name!r} {res.version!r}, not Apicurio Registry "
                        f"{self.version}; is another registry using it?"
                    )
                if res.compatibility != self.compatibility:
                    self._kill(signal.SIGKILL, 10.0)
                    raise RegistryError(
                        f"registry on port {self.port} reports compatibility {res.compatibility!r}, "
                        f"expected {self.compatibility!r}\n{self._log_tails()}"
                    )
                break
            if time.monotonic() > deadline:
                self._kill(signal.SIGKILL, 10.0)
                raise RegistryError(
                    f"Apicurio Registry {self.version} not ready on {self.management_url}/health/ready "
                    f"within {timeout_s:.0f}s\n{self._log_tails()}"
                )
            if self._startup_failed(log_offset):
                # Quarkus may stay alive after a failed start (e.g. OutOfMemoryError in a start-up task).
                self._kill(signal.SIGKILL, 10.0)
                raise RegistryError(f"Apicurio Registry {self.version} failed to start\n{self._log_tails()}")
            time.sleep(0.1)
        self.last_start_s = time.monotonic() - t0
        (self.state_dir / _URL_FILE).write_text(self.url + "\n")
        if detach:
            _ATTACHED.discard(self)
            self._proc = None  # forget the handle; the pid file identifies the JVM from now on
        return self.last_start_s

    def _startup_failed(self, offset: int) -> bool:
        """True if the log written since *offset* has Quarkus's "Failed to start application" line."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return _FAILED_START in f.read()
        except OSError:
            return False

    def _log_tails(self) -> str:
        errors = [line[:500] for line in _tail(self.log_path, 2000).splitlines() if _ERROR_LINE.search(line)]
        return (
            f"--- ERROR/FATAL/exception lines of {self.log_path} (last 10) ---\n" + "\n".join(errors[-10:]) + "\n"
            f"--- {self.log_path} (tail) ---\n{_tail(self.log_path, 30)}"
        )

    def _kill(self, sig: int, wait_s: float) -> bool:
        """Send *sig* to the registry's process group; True if it exited within *wait_s* seconds."""
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
        self._finish_cds_dump(keep=sig == signal.SIGTERM)
        _ATTACHED.discard(self)
        return True

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the registry: SIGTERM (Quarkus shutdown; writes the CDS archive on a first run), then SIGKILL.

        Ports are kept, so :meth:`start` brings back a registry at the same URL, but empty
        (in-memory storage). No-op if it is not running.

        :param timeout_s: seconds to wait after SIGTERM before SIGKILL.
        :raises RegistryError: the JVM survived SIGKILL for 10 seconds.
        """
        if self._kill(signal.SIGTERM, timeout_s):
            return
        if not self._kill(signal.SIGKILL, 10.0):
            raise RegistryError(f"registry pid {self.pid} did not die after SIGKILL")

    def restart(self, timeout_s: float = 90.0, *, stop_timeout_s: float = 30.0, detach: bool = False) -> float:
        """:meth:`stop` then :meth:`start` on the same ports (all schemas are gone: in-memory storage).

        :returns: seconds the start took. :raises RegistryError: as :meth:`stop`/:meth:`start`.
        """
        self.stop(stop_timeout_s)
        return self.start(timeout_s, detach=detach)

    def cleanup(self) -> None:
        """Stop the registry and delete *state_dir* if this object created it (temp dir)."""
        self.stop()
        if self._owns_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> LocalRegistry:
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
            f"LocalRegistry(version={self.version!r}, state_dir={str(self.state_dir)!r}, "
            f"port={self.port!r}, management_port={self.management_port!r}, "
            f"compatibility={self.compatibility!r}, running={self.is_running()})"
        )
