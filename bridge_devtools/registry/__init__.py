"""Apicurio schema registry (in-memory storage) on 127.0.0.1 for development and tests.

There is no Docker on the development machines, so this module fetches the
registry's Quarkus distribution (``io.apicurio:apicurio-registry-app:<version>:tar.gz:all``,
about 159 MB) from Maven Central with ``mvn dependency:copy`` into a per-user cache
outside the work tree, extracts it (168 MiB for 3.3.3) and runs ``java -jar
quarkus-run.jar`` directly. Clients use its Confluent Schema Registry compatible
API (``/apis/ccompat/v7``); the global compatibility rule defaults to ``BACKWARD``
as in Confluent's registry (Apicurio's own default is ``NONE``).

Requirements: Java 21+ (see :func:`find_java`: ``$BRIDGE_DEV_REGISTRY_JAVA``,
``$JAVA_HOME``, ``java`` on ``PATH`` or the newest JDK under ``/usr/lib/jvm``;
the broker's Java 17 is too old) and, for the first fetch of a version, Maven
3.6.3+ (``mvn`` on ``PATH``) with access to Maven Central.

Python API::

    from bridge_devtools.registry import LocalRegistry

    with LocalRegistry() as registry:      # fresh temp state dir, free ports, BACKWARD
        use(registry.url)                  # "http://127.0.0.1:<port>/apis/ccompat/v7"
    # leaving the block stops the JVM (all schemas are gone) and deletes the temp state dir

CLI (``python -m bridge_devtools.registry --help``)::

    python -m bridge_devtools.registry fetch  [--version V]
    python -m bridge_devtools.registry start  [--version V] [--state-dir D] [--port P]
                                              [--management-port M] [--compatibility LEVEL]
    python -m bridge_devtools.registry stop   [--state-dir D]
    python -m bridge_devtools.registry status [--state-dir D]

Environment:

``BRIDGE_DEV_REGISTRY_VERSION``
    Registry version to use when none is passed (default :data:`DEFAULT_REGISTRY_VERSION`).
``BRIDGE_DEV_REGISTRY_JAVA``
    The Java 21+ to run it with: a ``java`` executable or a Java home.
``XDG_CACHE_HOME``
    Cache root (default ``~/.cache``); the distribution goes to
    ``$XDG_CACHE_HOME/lark-bridge/registry/<version>/app`` (class-data-sharing
    archives to ``.../cds``), the CLI's default state dir is
    ``$XDG_CACHE_HOME/lark-bridge/registry-run``.

Sources:

* Apicurio Registry 3 (Quarkus app, ``apicurio.rules.global.compatibility``,
  ccompat API, default SQL storage on in-memory H2): https://www.apicur.io/registry/docs/
* Quarkus management interface (``quarkus.management.*``, ``/health/ready`` on it):
  https://quarkus.io/guides/management-interface-reference and https://quarkus.io/guides/smallrye-health
* Confluent Schema Registry API (``/subjects/{subject}/versions``, ``/schemas/ids/{id}``,
  ``/config``, ``/compatibility/...``):
  https://docs.confluent.io/platform/current/schema-registry/develop/api.html

This module only uses the standard library, so the CLI runs without the
project's virtualenv.

Layout: ``fetch`` (versions, cache, Maven, Java 21+), ``probe`` (HTTP readiness probe),
``process`` (:class:`LocalRegistry`), ``__main__`` (the CLI).
"""

from __future__ import annotations

from bridge_devtools.broker.probe import free_port, free_ports
from bridge_devtools.registry.fetch import (
    DEFAULT_REGISTRY_VERSION,
    JAVA_ENV,
    MIN_JAVA,
    VERSION_ENV,
    Java,
    RegistryError,
    app_dir,
    default_state_dir,
    fetch,
    find_java,
    registry_version,
)
from bridge_devtools.registry.probe import CCOMPAT_PATH, ProbeResult, get_json, probe
from bridge_devtools.registry.process import COMPATIBILITY_LEVELS, LocalRegistry

__all__ = [
    "CCOMPAT_PATH",
    "COMPATIBILITY_LEVELS",
    "DEFAULT_REGISTRY_VERSION",
    "JAVA_ENV",
    "MIN_JAVA",
    "VERSION_ENV",
    "Java",
    "LocalRegistry",
    "ProbeResult",
    "RegistryError",
    "app_dir",
    "default_state_dir",
    "fetch",
    "find_java",
    "free_port",
    "free_ports",
    "get_json",
    "probe",
    "registry_version",
]
