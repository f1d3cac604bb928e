"""The argument documentation that ACKTR, SMAC and KFRELAX share (``common.parameter_docs``), merged into their docstrings."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from sb3_natgrad import ACKTR, KFRELAX, SMAC
from sb3_natgrad.acktr.kfac_options import OPTION_DOCS, SAME_NAMES
from sb3_natgrad.common.on_policy import NaturalGradientAlgorithm
from sb3_natgrad.common.parameter_docs import SHARED_PARAMETER_DOCS, documented_parameters, merge_parameter_docs


@pytest.mark.parametrize("algo", [ACKTR, SMAC, KFRELAX], ids=lambda algo: algo.__name__)
def test_every_argument_is_documented_once_in_the_signatures_order(algo: type) -> None:
    arguments = list(inspect.signature(algo.__init__).parameters)[1:]
    assert documented_parameters(algo.__doc__) == arguments
    # the class's prose is kept in front of the parameters
    assert algo.__doc__.index("Paper") < algo.__doc__.index(":param policy:")


def test_an_algorithms_own_description_wins_over_the_shared_one() -> None:
    assert "KFRELAXPolicy" in KFRELAX.__doc__.split(":param policy:")[1].split(":param")[0]
    assert "not supported" in KFRELAX.__doc__.split(":param use_sde:")[1].split(":param")[0]
    assert SHARED_PARAMETER_DOCS["use_sde"] in ACKTR.__doc__


def test_acktrs_kfac_options_are_documented_from_one_table() -> None:
    assert set(OPTION_DOCS) == set(SAME_NAMES)
    for name, text in OPTION_DOCS.items():
        entry = ACKTR.__doc__.split(f":param {name}:")[1].split(":param")[0]
        assert " ".join(entry.split()) == " ".join(text.split())


def example(self: Any, alpha: int, beta: int, gamma: int, delta: int) -> None:  # a signature to document
    pass


def test_merge_orders_by_signature_prefers_own_entries_and_keeps_other_fields() -> None:
    docstring = """
        Summary.

        More prose.

        :param gamma: own gamma,
            continued
        :param alpha: own alpha
        :raises ValueError: on bad input
        """
    merged = merge_parameter_docs(docstring, example, ({"beta": "table beta", "gamma": "table gamma"}, {"beta": "second"}))
    assert merged == (
        "Summary.\n\nMore prose.\n\n"
        ":param alpha: own alpha\n:param beta: table beta\n:param gamma: own gamma,\n    continued\n"
        ":raises ValueError: on bad input\n"
    )  # delta is documented nowhere and left out; the first table that has beta wins


def test_long_descriptions_are_wrapped_as_continuation_lines() -> None:
    merged = merge_parameter_docs("Summary.", example, ({"alpha": "word " * 60},))
    lines = merged.splitlines()
    assert lines[2].startswith(":param alpha: word") and all(line.startswith("    word") for line in lines[3:])
    assert max(map(len, lines)) <= 120


def test_a_user_subclass_keeps_its_own_docstring_and_gets_the_shared_entries() -> None:
    class Undocumented(ACKTR):
        pass

    class Mine(NaturalGradientAlgorithm):
        """My algorithm.

        :param lr: my step size
        """

        def __init__(self, policy: Any, env: Any, lr: float = 0.1, seed: int | None = None) -> None:
            pass

    assert Undocumented.__doc__ is None
    assert Mine.__doc__ == (
        "My algorithm.\n\n:param policy: " + SHARED_PARAMETER_DOCS["policy"] + "\n:param env: the environment (or its "
        "Gymnasium id)\n:param lr: my step size\n:param seed: random seed\n"
    )
