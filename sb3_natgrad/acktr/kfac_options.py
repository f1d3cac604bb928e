"""
ACKTR's K-FAC options: their names, their checks and the optimizer they build, in one place for the Stable-Baselines3
ACKTR (:class:`~sb3_natgrad.acktr.ACKTR`) and the RLlib one (:mod:`sb3_natgrad.rllib`). Imports no SB3.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from sb3_natgrad.optim import KFAC
from sb3_natgrad.optim.kfac import check_kfac_arguments

#: K-FAC's arguments that ACKTR names as SB2 / OpenAI baselines did (K-FAC's name -> ACKTR's)
RENAMED = {"kl_clip": "kfac_clip", "warmup_max_grad_norm": "max_grad_norm"}
#: K-FAC's keyword arguments that ACKTR passes under the same name
SAME_NAMES = (
    "momentum",
    "damping",
    "weight_decay",
    "stat_decay",
    "stats_interval",
    "inverse_interval",
    "inverse_method",
    "damping_type",
    "warmup_steps",
    "stats_batch_size",
    "stats_dtype",
    "conv_factors",
    "async_inverse",
)
#: every K-FAC option of ACKTR, by ACKTR's names
OPTION_NAMES = (*RENAMED.values(), *SAME_NAMES)
#: what the options of :data:`SAME_NAMES` mean (ACKTR's docstring has them from here; ``kfac_clip`` and
#: ``max_grad_norm`` are documented by ACKTR itself)
OPTION_DOCS = {
    "damping": "K-FAC Tikhonov damping ``lambda``",
    "momentum": "K-FAC momentum",
    "stat_decay": "EMA decay of the Kronecker factors",
    "stats_interval": "update the factors every ``stats_interval`` updates (the sampled-Fisher pass is skipped in between)",
    "inverse_interval": "recompute the factor decompositions every ``inverse_interval`` updates",
    "inverse_method": '``"eigen"`` (reference) or ``"cholesky"`` (cheaper on a CPU, factored damping)',
    "damping_type": '``"kronecker"`` (reference, eigen only) or ``"factored"`` (paper text); ``None`` picks the '
    "method's natural one",
    "warmup_steps": "number of first-order warm-up updates",
    "weight_decay": "L2 coefficient (also added to the damping)",
    "stats_batch_size": "use at most this many samples of each batch for the factor statistics (``None``: all)",
    "stats_dtype": 'dtype of the per-batch factor products (``"bfloat16"``: several times faster on hardware with native '
    "bfloat16 matrix products, e.g. CPUs with AVX512-BF16 or AMX and Ampere GPUs; ``None``: float32)",
    "conv_factors": 'Kronecker factors of the convolutions (``CnnPolicy``): ``"expand"`` (KFC, the paper\'s; every output '
    'position is a row) or ``"reduce"`` (Eschenhagen et al. 2023: per sample, the mean input patch and the summed output '
    "gradient, ``Oh * Ow`` times fewer rows; exact for the reduce setting of a policy network, see "
    ":mod:`sb3_natgrad.optim.kronecker`), or a mapping from layer names to these. No effect without convolutions",
    "async_inverse": "recompute decompositions in a background thread (Wu et al. 2017, §3.1); results then depend on "
    "thread timing",
}


def check_acktr_kfac_arguments(owner: str, arguments: dict[str, Any]) -> None:
    """
    K-FAC's checks of ACKTR's K-FAC options (:data:`OPTION_NAMES`), with errors in ACKTR's names, plus damping > 0.

    :param owner: the class named in the errors
    :param arguments: the options by ACKTR's names
    :raises ValueError: naming the first bad option
    """
    kfac_arguments = {key: arguments[key] for key in SAME_NAMES if key != "async_inverse"}
    kfac_arguments.update({kfac_name: arguments[name] for kfac_name, name in RENAMED.items()})
    check_kfac_arguments(owner, RENAMED, **kfac_arguments)
    if arguments["damping"] + arguments["weight_decay"] == 0:
        # K-FAC's factors of a policy network are rank-deficient: without damping nearly every step is refused
        raise ValueError(
            f"{owner}: invalid damping=0 with weight_decay=0, expected damping > 0: the undamped "
            "Kronecker factors are singular (e.g. damping=0.01, the paper's)"
        )


def make_kfac(module: nn.Module, lr: float, options: Any, **kfac_kwargs: Any) -> KFAC:
    """
    K-FAC over every Linear / Conv2d layer of ``module`` (actor and critic: one joint trust region), from ACKTR's options.

    :param module: the actor-critic network
    :param lr: the initial step size (a schedule writes later values into ``param_groups``)
    :param options: an object with ACKTR's options as attributes (:data:`OPTION_NAMES`): the algorithm or its config
    :param kfac_kwargs: further keyword arguments of :class:`~sb3_natgrad.optim.KFAC`
    :return: the optimizer
    """
    arguments = {kfac_name: getattr(options, name) for kfac_name, name in RENAMED.items()}
    arguments.update({name: getattr(options, name) for name in SAME_NAMES})
    return KFAC(module, lr=lr, **arguments, **kfac_kwargs)
