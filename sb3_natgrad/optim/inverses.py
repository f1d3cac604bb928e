"""
How K-FAC inverts a layer's damped Kronecker factors: one class per strategy.

Each strategy decomposes a layer's factors ``A``, ``G`` (:meth:`InverseStrategy.decompose`, every
``inverse_interval`` steps) and applies the damped inverse to the layer's gradient matrix ``V`` (:meth:`precondition`,
every step). The decomposition is stored in the optimizer's per-parameter state under the strategy's ``keys``, so
files saved by earlier versions (the same keys) still load.

- :class:`EigenKronecker` (the reference ACKTR code): ``(A kron G + lambda I)^-1`` in the eigenbases of ``A`` and
  ``G`` (Martens & Grosse 2015, §6.3 discusses both dampings);
- :class:`EigenFactored`: factored damping ``(A + pi sqrt(lambda) I)^-1 kron (G + sqrt(lambda) / pi I)^-1`` (Martens
  & Grosse 2015, §6.3; the ACKTR paper's text), through the same eigenbases;
- :class:`CholeskyFactored`: the same factored damping through two Cholesky inverses (about 5x cheaper than
  ``eigh`` on a CPU).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from sb3_natgrad.optim import kronecker


class InverseStrategy:
    """A way to decompose and apply a layer's damped Kronecker-factored inverse."""

    #: ``(inverse_method, damping_type)`` of the strategy
    inverse_method: ClassVar[str]
    damping_type: ClassVar[str]
    #: the keys of the decomposition (in a saved optimizer state, beside the factors)
    keys: ClassVar[tuple[str, ...]]
    #: whether the damping is part of the decomposition (so a new damping needs a new decomposition)
    damping_in_decomposition: ClassVar[bool]

    def decompose(self, factor_a: torch.Tensor, factor_g: torch.Tensor, damping: float) -> dict[str, Any]:
        """
        :param factor_a: the input factor ``A``
        :param factor_g: the output-gradient factor ``G``
        :param damping: ``lambda`` (damping plus weight decay)
        :return: the tensors to store under ``keys``
        :raises RuntimeError: or ``torch.linalg.LinAlgError`` if the factors cannot be decomposed
        """
        raise NotImplementedError

    def precondition(self, mat: torch.Tensor, state: dict[str, Any], damping: float) -> torch.Tensor:
        """
        :param mat: the layer's gradient matrix ``V`` (``[out, in (+1)]``)
        :param state: the layer's decomposition (what :meth:`decompose` returned)
        :param damping: ``lambda``
        :return: the damped ``F^-1 vec(V)`` as a matrix
        """
        raise NotImplementedError


class EigenKronecker(InverseStrategy):
    """``(A kron G + lambda I)^-1`` in the factors' eigenbases."""

    inverse_method = "eigen"
    damping_type = "kronecker"
    keys = ("d_a", "q_a", "d_g", "q_g", "damp_a", "damp_g", "inverse_damping")
    damping_in_decomposition = False

    def decompose(self, factor_a: torch.Tensor, factor_g: torch.Tensor, damping: float) -> dict[str, Any]:
        d_a, q_a = torch.linalg.eigh(factor_a)
        d_g, q_g = torch.linalg.eigh(factor_g)
        return {"d_a": d_a.clamp(min=0.0), "q_a": q_a, "d_g": d_g.clamp(min=0.0), "q_g": q_g}

    def precondition(self, mat: torch.Tensor, state: dict[str, Any], damping: float) -> torch.Tensor:
        return kronecker.eigen_precondition(mat, state["q_a"], state["d_a"], state["q_g"], state["d_g"], damping)


class EigenFactored(EigenKronecker):
    """Factored damping through the factors' eigenbases."""

    damping_type = "factored"
    damping_in_decomposition = True

    def decompose(self, factor_a: torch.Tensor, factor_g: torch.Tensor, damping: float) -> dict[str, Any]:
        result = super().decompose(factor_a, factor_g, damping)
        result["damp_a"], result["damp_g"] = kronecker.factored_damping(factor_a, factor_g, damping)
        return result

    def precondition(self, mat: torch.Tensor, state: dict[str, Any], damping: float) -> torch.Tensor:
        d_a, d_g = state["d_a"] + state["damp_a"], state["d_g"] + state["damp_g"]
        return kronecker.eigen_precondition(mat, state["q_a"], d_a, state["q_g"], d_g, 0.0)


class CholeskyFactored(InverseStrategy):
    """Factored damping through two Cholesky inverses."""

    inverse_method = "cholesky"
    damping_type = "factored"
    keys = ("a_inv", "g_inv", "inverse_damping")
    damping_in_decomposition = True

    def decompose(self, factor_a: torch.Tensor, factor_g: torch.Tensor, damping: float) -> dict[str, Any]:
        damp_a, damp_g = kronecker.factored_damping(factor_a, factor_g, damping)
        return {
            "a_inv": kronecker.damped_cholesky_inverse(factor_a, damp_a),
            "g_inv": kronecker.damped_cholesky_inverse(factor_g, damp_g),
        }

    def precondition(self, mat: torch.Tensor, state: dict[str, Any], damping: float) -> torch.Tensor:
        return state["g_inv"] @ mat @ state["a_inv"]


_STRATEGIES = {(cls.inverse_method, cls.damping_type): cls for cls in (EigenKronecker, EigenFactored, CholeskyFactored)}


def inverse_strategy(inverse_method: str, damping_type: str) -> InverseStrategy:
    """
    The strategy for a checked ``(inverse_method, damping_type)`` pair (see ``check_kfac_arguments``).

    :raises KeyError: for a pair without a strategy (``("cholesky", "kronecker")``)
    """
    return _STRATEGIES[(inverse_method, damping_type)]()
