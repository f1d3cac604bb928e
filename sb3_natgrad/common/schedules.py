"""Picklable schedules (SB3 saves the learning rate with cloudpickle; module-level classes reload anywhere)."""

from __future__ import annotations


class LinearDecay:
    """
    ``initial * progress_remaining``: decays linearly from ``initial`` at the start of ``learn`` to 0 at its end (and
    stays 0 if the last rollout overshoots the budget, where SB3's progress goes below 0).

    The learning-rate schedule of the ACKTR paper and of the OpenAI / SB2 reference code.

    :param initial: value at the start of training
    """

    def __init__(self, initial: float) -> None:
        self.initial = float(initial)

    def __call__(self, progress_remaining: float) -> float:
        return self.initial * max(progress_remaining, 0.0)

    def __repr__(self) -> str:
        return f"LinearDecay({self.initial})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LinearDecay) and other.initial == self.initial

    def __hash__(self) -> int:
        return hash(("LinearDecay", self.initial))
