"""Developer tooling (local Kafka broker for integration tests); not imported by the bridge at runtime."""
