"""Kafka versions, the jar cache and fetching the broker jars from Maven Central (``mvn``).

Standard library only. See the package docstring for the environment variables.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

#: Kafka version used when neither an argument nor ``$BRIDGE_DEV_KAFKA_VERSION`` is given.
#: Verified with aiokafka 0.14.0 (admin create_topics, idempotent produce with
#: lz4/zstd, consume, broker restart).
DEFAULT_KAFKA_VERSION = "4.1.1"

#: Environment variable overriding :data:`DEFAULT_KAFKA_VERSION`.
VERSION_ENV = "BRIDGE_DEV_KAFKA_VERSION"

POM_PATH = Path(__file__).parent.parent / "kafka-pom.xml"

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


def default_cluster_dir() -> Path:
    """Default state dir of the CLI's daemonized cluster: ``<cache_root()>/cluster``."""
    return cache_root() / "cluster"


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
            mvn,
            "-B",
            "-q",
            "-Dstyle.color=never",
            "-f",
            str(POM_PATH),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
            f"-Dkafka.version={version}",
        ]
        try:
            try:
                res = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=timeout_s,
                    check=False,
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
