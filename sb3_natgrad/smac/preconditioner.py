"""SMAC's preconditioner as Stable-Baselines3 saves it (``preconditioner.pth`` of a saved model)."""

from __future__ import annotations

from typing import Any

import torch as th

from sb3_natgrad.optim.sherman_morrison import ShermanMorrison


class PersistentShermanMorrison(ShermanMorrison):
    """
    :class:`ShermanMorrison` as SB3 saves its objects: ``state_dict`` holds tensors (SB3's convention for every
    entry of ``get_parameters()`` that is not an optimizer) and ``load_state_dict`` takes the ``strict`` keyword
    ``set_parameters`` passes. Files saved with plain ints load too.
    """

    def state_dict(self) -> dict[str, Any]:
        """:return: the step and skip counters as 0-dim int64 tensors"""
        return {key: th.tensor(int(value), dtype=th.int64) for key, value in super().state_dict().items()}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """
        :param state_dict: a state produced by ``state_dict()`` (tensors or, in older files, ints)
        :param strict: require every key (``False``: load the keys present)
        """
        plain = {key: int(value) for key, value in state_dict.items()}
        if strict:
            super().load_state_dict(plain)
            return
        for key in ("num_steps", "num_skipped"):
            if key in plain:
                setattr(self, key, plain[key])
