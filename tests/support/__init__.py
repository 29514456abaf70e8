"""What the tests share, one concern per module; import the module you need (this package
imports none of them, so a unit test never pulls in Kafka clients it does not use).

* :mod:`tests.support.credentials` — the test app's verification token and encrypt keys.
* :mod:`tests.support.samples` — documented sample bodies with the test token and an event id.
* :mod:`tests.support.waits` — polling until a condition holds or an endpoint answers a status.
* :mod:`tests.support.processes` — the environment of a bridge (or demo) subprocess.
* :mod:`tests.support.schemas` — JSON-schema validators of ``schemas/``.
* :mod:`tests.support.fakes` — fakes for the Kafka edge (``RecordPublisher``) and the sink.
* :mod:`tests.support.bridges` — a bridge app on a real port, for the integration tests.
* :mod:`tests.support.kafka` — reading a topic back with a real consumer.
* :mod:`tests.support.helm` — finding the helm binary for the chart tests.

Test modules and ``conftest.py`` files import from here, never from each other.
"""
