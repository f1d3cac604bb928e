"""SMAC's argument checks: the ranges of its own arguments (those it shares with ACKTR and KFRELAX are checked in common)."""

from __future__ import annotations

from functools import partial

from sb3_natgrad.common.checks import ArgumentCheck, check_choice, check_int, check_learning_rate, check_number
from sb3_natgrad.optim.sherman_morrison import FISHER_MODES

ARGUMENT_CHECKS: dict[str, ArgumentCheck] = {
    "actor_step_size": check_learning_rate,
    "batch_size": partial(check_int, low=1, allow_none=True),
    "n_critic_updates": partial(check_int, low=0),
    "damping": partial(check_number, low=0.0, low_inclusive=False),
    "fisher": partial(check_choice, choices=FISHER_MODES),
    "max_kl": partial(check_number, low=0.0, low_inclusive=False, allow_none=True),
    "fisher_samples": partial(check_int, low=1, allow_none=True),
    "line_search_shrinking_factor": partial(check_number, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False),
    "line_search_max_iter": partial(check_int, low=0),
}
