"""Lark/Feishu meeting-room events → verified, normalized CloudEvents → Kafka."""

__version__ = "0.1.0"
