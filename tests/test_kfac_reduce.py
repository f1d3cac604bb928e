"""K-FAC-reduce for convolutions (Eschenhagen et al. 2023) against dense float64 references."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kfac_reference import categorical_sampled_logp, dense_factors, homogeneous_grad, vec
from test_kfac import (
    assert_factors_and_step_match_dense,
    conv_configs,
    covered_layers,
    factors_of,
    record_batch,
    step_with_lr_zero,
    tiny_cnn,
)
from torch import nn

from sb3_natgrad.optim import KFAC, kronecker


@settings(max_examples=30, deadline=None)
@given(cfg=conv_configs(), damping=st.floats(1e-3, 1.0))
def test_reduce_factors_and_step_against_dense(cfg, damping):
    """Stride, padding (incl. "same"), dilation, bias and no bias: factors and the preconditioned step."""
    assert_factors_and_step_match_dense(cfg, damping, conv_factors="reduce")


def test_reduce_differs_from_expand_with_several_positions():
    """The test above would pass for expand too if the option were ignored: both forms must differ here."""
    x = torch.randn(6, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    factors = {}
    for mode in ("expand", "reduce"):
        model = tiny_cnn()
        opt = KFAC(model, kl_clip=None, conv_factors=mode)
        step_with_lr_zero(opt, model, record_batch(opt, model, x, seed=1))
        factors[mode] = [factors_of(opt, layer) for layer in covered_layers(model)]
    for (a_e, g_e), (a_r, g_r), layer in zip(factors["expand"], factors["reduce"], covered_layers(tiny_cnn())):
        if isinstance(layer, nn.Conv2d):
            assert not torch.allclose(a_e, a_r) and not torch.allclose(g_e, g_r)
        else:  # Linear layers do not depend on the option
            torch.testing.assert_close(a_e, a_r, rtol=0, atol=0)
            torch.testing.assert_close(g_e, g_r, rtol=0, atol=0)


@pytest.mark.parametrize("bias", [True, False])
def test_both_forms_agree_for_a_single_output_position(bias):
    torch.manual_seed(0)
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    factors = {}
    for mode in ("expand", "reduce"):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Conv2d(3, 4, kernel_size=4, bias=bias), nn.Tanh(), nn.Flatten(), nn.Linear(4, 3)).double()
        opt = KFAC(model, kl_clip=None, conv_factors=mode)
        step_with_lr_zero(opt, model, record_batch(opt, model, x, seed=2))
        factors[mode] = factors_of(opt, model[0])
    torch.testing.assert_close(factors["expand"][0], factors["reduce"][0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(factors["expand"][1], factors["reduce"][1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bias", [True, False])
def test_reduce_is_exact_in_the_reduce_setting_and_expand_is_not(bias):
    """
    A linear convolution, mean pooling over its positions and a linear head (Prop. 2 of Eschenhagen et al. 2023):
    for one sample A_reduce kron G_reduce is the sample's rank-one Fisher vec(dW) vec(dW)^T exactly; expand's
    product is not (the negative half is what catches a wrong 1/R scaling).
    """
    torch.manual_seed(0)
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    products = {}
    for mode in ("expand", "reduce"):
        torch.manual_seed(1)
        model = nn.Sequential(
            nn.Conv2d(2, 3, kernel_size=3, stride=2, padding=1, bias=bias),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(3, 4),
        ).double()
        opt = KFAC(model, kl_clip=None, conv_factors=mode)
        step_with_lr_zero(opt, model, record_batch(opt, model, x, seed=4))
        a, g = factors_of(opt, model[0])
        products[mode] = torch.kron(a, g)
        logp = categorical_sampled_logp(model(x), torch.Generator().manual_seed(4)).sum()  # the same sampled label
        model.zero_grad()
        logp.backward()
        v = vec(homogeneous_grad(model[0]))
        exact = torch.outer(v, v)
    torch.testing.assert_close(products["reduce"], exact, rtol=1e-10, atol=1e-12)
    assert (products["expand"] - exact).norm() > 1e-3 * exact.norm()


def test_reduce_builds_no_patch_matrix(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the reduce path built the patch matrix")

    monkeypatch.setattr(kronecker, "conv2d_patches", fail)
    model = tiny_cnn()
    opt = KFAC(model, kl_clip=None, conv_factors="reduce")
    x = torch.randn(4, 2, 8, 8, dtype=torch.float64)
    step_with_lr_zero(opt, model, record_batch(opt, model, x))
    assert all(opt.curvature(layer).factor_a is not None for layer in covered_layers(model))


def test_patch_means_are_the_mean_of_the_patch_rows():
    conv = nn.Conv2d(3, 2, kernel_size=(3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    x = torch.randn(4, 3, 9, 7, dtype=torch.float64)
    rows = kronecker.conv2d_patches(conv, x)
    expected = rows.reshape(4, -1, rows.shape[1]).mean(dim=1)
    torch.testing.assert_close(kronecker.conv2d_patch_means(conv, x), expected)


def test_per_layer_mapping_sets_single_layers():
    model = tiny_cnn()
    opt = KFAC(model, kl_clip=None, conv_factors={"2": "reduce"})
    assert opt.conv_factors == {"0": "expand", "2": "reduce"}
    x = torch.randn(6, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    step_with_lr_zero(opt, model, record_batch(opt, model, x, seed=1))
    for layer, mode in zip(covered_layers(model), ("expand", "reduce", "expand")):
        a_ref, g_ref = dense_factors(
            model, layer, x, lambda out: categorical_sampled_logp(out, torch.Generator().manual_seed(1)), mode
        )
        a, g = factors_of(opt, layer)
        torch.testing.assert_close(a, a_ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


def test_option_is_a_no_op_without_convolutions():
    x = torch.randn(9, 5, dtype=torch.float64)
    factors = []
    for mode in ("expand", "reduce"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
        opt = KFAC(model, kl_clip=None, conv_factors=mode)
        assert opt.conv_factors == {}
        step_with_lr_zero(opt, model, record_batch(opt, model, x))
        factors.append([factors_of(opt, layer) for layer in covered_layers(model)])
    for (a0, g0), (a1, g1) in zip(*factors):
        assert torch.equal(a0, a1) and torch.equal(g0, g1)


@pytest.mark.bad_input
@pytest.mark.parametrize("value", ["Reduce", "kfc", None, 3, {"0": "sum"}])
def test_unknown_value_is_a_value_error_naming_it(value):
    with pytest.raises(ValueError, match="conv_factors"):
        KFAC(tiny_cnn(), conv_factors=value)


@pytest.mark.bad_input
@pytest.mark.parametrize("names", [["5"], ["nope"]])  # "5" is the Linear head
def test_mapping_naming_a_layer_that_is_not_a_covered_convolution_is_refused(names):
    with pytest.raises(ValueError, match=f"conv_factors names layers .*{names[0]}"):
        KFAC(tiny_cnn(), conv_factors=dict.fromkeys(names, "reduce"))


def train_a_little(opt: KFAC, model: nn.Module, seed: int) -> None:
    x = torch.randn(6, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    logits = record_batch(opt, model, x, seed=seed)
    opt.zero_grad()
    logits.logsumexp(-1).mean().backward()
    opt.step()


@pytest.mark.bad_input
def test_state_dict_keeps_the_option_and_refuses_the_other_form():
    model = tiny_cnn()
    opt = KFAC(model, lr=0.1, conv_factors="reduce")
    for seed in range(3):
        train_a_little(opt, model, seed)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    saved = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert saved["kfac"]["conv_factors"] == {"0": "reduce", "2": "reduce"}

    same = KFAC(tiny_cnn(), lr=0.1, conv_factors="reduce")
    same.load_state_dict(saved)
    for layer_a, layer_b in zip(covered_layers(model), same.layers):
        torch.testing.assert_close(opt.curvature(layer_a).factor_a, layer_b.curvature.factor_a)
    with pytest.raises(ValueError, match="conv_factors"):
        KFAC(tiny_cnn(), lr=0.1).load_state_dict(saved)


def test_files_without_the_option_load_as_expand():
    model = tiny_cnn()
    opt = KFAC(model, lr=0.1)
    train_a_little(opt, model, 0)
    old_format = opt.state_dict()
    del old_format["kfac"]["conv_factors"]
    KFAC(tiny_cnn(), lr=0.1).load_state_dict(old_format)
    with pytest.raises(ValueError, match="conv_factors"):
        KFAC(tiny_cnn(), lr=0.1, conv_factors="reduce").load_state_dict(old_format)
