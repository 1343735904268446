"""The consumer group's rebalance callbacks, handed on to the intake (called on the client's IO
thread), and how partitions are named in the log."""

from __future__ import annotations

from typing import Any, Protocol

from kafka import ConsumerRebalanceListener


class RebalanceHandler(Protocol):
    def on_revoked(self, revoked: list[Any]) -> None: ...
    def on_assigned(self, assigned: list[Any]) -> None: ...
    def on_lost(self, lost: list[Any]) -> None: ...


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, intake: RebalanceHandler) -> None:
        self.intake = intake

    def on_partitions_revoked(self, revoked: list[Any]) -> None:
        self.intake.on_revoked(revoked)

    def on_partitions_assigned(self, assigned: list[Any]) -> None:
        self.intake.on_assigned(assigned)

    def on_partitions_lost(self, lost: list[Any]) -> None:
        self.intake.on_lost(lost)


def partitions_text(partitions: list[Any]) -> str:
    if not partitions:
        return "no partitions"
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions))
