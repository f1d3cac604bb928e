"""
ACKTR's optional KL-adaptive step size (``kl_target``): the rule of the continuous-control ACKTR code that produced
Wu et al. 2017's MuJoCo results (OpenAI baselines, ``acktr_cont``), in one place.
"""

from __future__ import annotations

import math

#: the step size is divided (multiplied) by this factor after an update whose KL is above (below) the band
KL_ADAPT_FACTOR = 1.5
#: the band around ``kl_target``: ``[kl_target / KL_BAND, kl_target * KL_BAND]`` leaves the step size unchanged
KL_BAND = 2.0
#: the adapted step size (the schedule's learning rate times the scale) stays within these bounds
MIN_STEP_SIZE = 1e-8
MAX_STEP_SIZE = 1.0


def adapted_step_scale(scale: float, kl: float | None, kl_target: float, learning_rate: float) -> float:
    """
    The factor on the learning rate for the next update, after an update whose exact batch-mean ``KL(pi_old || pi_new)``
    was ``kl``: divided by 1.5 if ``kl > 2 kl_target``, multiplied by 1.5 if ``kl < kl_target / 2``, otherwise kept;
    then clamped so that ``learning_rate * scale`` stays within ``[1e-8, 1]`` (the reference code's bounds on its
    step size). A missing or non-finite KL (an update that was skipped) leaves the factor unchanged.

    :param scale: the current factor (> 0)
    :param kl: the exact KL of the update just taken, or ``None``
    :param kl_target: the KL the rule steers towards (> 0)
    :param learning_rate: the schedule's learning rate of the update just taken (the clamp is relative to it; with 0,
        no clamp)
    :return: the new factor
    """
    if kl is None or not math.isfinite(kl):
        return scale
    if kl > KL_BAND * kl_target:
        scale /= KL_ADAPT_FACTOR
    elif kl < kl_target / KL_BAND:
        scale *= KL_ADAPT_FACTOR
    if learning_rate > 0:
        scale = min(max(scale, MIN_STEP_SIZE / learning_rate), MAX_STEP_SIZE / learning_rate)
    return scale
