"""K-FAC against dense float64 computations, trust region, persistence, robustness and bad arguments."""

from __future__ import annotations

import copy
import io
import itertools
import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kfac_reference import (
    categorical_sampled_logp,
    dense_factored_solve,
    dense_factors,
    dense_kronecker_solve,
    homogeneous_grad,
    vec,
)
from torch import nn

from sb3_natgrad.optim import KFAC, kronecker


def tiny_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 3, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(3, 4, kernel_size=2, stride=1, dilation=2, bias=False),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 3),
    ).double()


def covered_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def record_batch(opt: KFAC, model: nn.Module, x: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """Training forward + sampled-Fisher statistics; returns the logits (graph kept)."""
    model.train()
    logits = model(x)
    gen = torch.Generator().manual_seed(seed)
    opt.record_fisher(categorical_sampled_logp(logits, gen).mean())
    return logits


def factors_of(opt: KFAC, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    curvature = opt.curvature(layer)
    return curvature.factor_a, curvature.factor_g


def step_with_lr_zero(opt: KFAC, model: nn.Module, logits: torch.Tensor) -> None:
    for group in opt.param_groups:
        group["lr"] = 0.0
    opt.zero_grad()
    logits.sum().backward()
    opt.step()


# ---------------------------------------------------------------------------------------------- factors


@pytest.mark.parametrize("make_model, x_shape", [(tiny_mlp, (9, 5)), (tiny_cnn, (6, 2, 8, 8))])
def test_factors_equal_dense_per_example(make_model, x_shape):
    model = make_model()
    opt = KFAC(model, kl_clip=None)
    x = torch.randn(*x_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    logits = record_batch(opt, model, x, seed=1)
    step_with_lr_zero(opt, model, logits)
    for layer in covered_layers(model):
        gen = torch.Generator().manual_seed(1)  # same sampled labels as the optimizer saw
        a_ref, g_ref = dense_factors(model, layer, x, lambda out, gen=gen: categorical_sampled_logp(out, gen))
        a, g = factors_of(opt, layer)
        torch.testing.assert_close(a, a_ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


def test_single_sample_linear_factors_are_the_exact_fisher_block():
    """For one sample, A kron G equals vec(dW~) vec(dW~)^T of the homogeneous weight [W, b]."""
    model = tiny_mlp()
    opt = KFAC(model, kl_clip=None)
    x = torch.randn(1, 5, dtype=torch.float64)
    logits = record_batch(opt, model, x, seed=4)
    step_with_lr_zero(opt, model, logits)
    gen = torch.Generator().manual_seed(4)
    logp = categorical_sampled_logp(model(x), gen).sum()
    model.zero_grad()
    logp.backward()
    for layer in covered_layers(model):
        v = vec(homogeneous_grad(layer))
        a, g = factors_of(opt, layer)
        torch.testing.assert_close(torch.kron(a, g), torch.outer(v, v), rtol=1e-10, atol=1e-12)


def test_track_fisher_context_equals_record_fisher():
    x = torch.randn(7, 5, dtype=torch.float64)
    results = []
    for use_context in (False, True):
        model = tiny_mlp()
        opt = KFAC(model, kl_clip=None)
        logits = model(x)
        loss = categorical_sampled_logp(logits, torch.Generator().manual_seed(2)).mean()
        if use_context:
            with opt.track_fisher():
                loss.backward(retain_graph=True)
        else:
            opt.record_fisher(loss)
        step_with_lr_zero(opt, model, logits)
        results.append([factors_of(opt, layer) for layer in covered_layers(model)])
    for (a0, g0), (a1, g1) in zip(*results):
        torch.testing.assert_close(a0, a1)
        torch.testing.assert_close(g0, g1)


def test_no_statistics_from_eval_mode_or_no_grad_forwards():
    model = tiny_mlp()
    opt = KFAC(model, kl_clip=None)
    x_other = torch.randn(50, 5, dtype=torch.float64) * 10
    with torch.no_grad():
        model(x_other)
    model.eval()
    model(x_other)
    assert all(not layer.records for layer in opt.layers)
    # A Fisher "pass" after eval-mode forwards records nothing.
    opt.record_fisher(model(x_other).logsumexp(-1).mean())
    assert all(layer.a_sum is None and layer.g_sum is None for layer in opt.layers)

    x = torch.randn(9, 5, dtype=torch.float64)
    logits = record_batch(opt, model, x, seed=1)
    step_with_lr_zero(opt, model, logits)
    layer = covered_layers(model)[0]
    a_ref, _ = dense_factors(model, layer, x, lambda out: categorical_sampled_logp(out, torch.Generator().manual_seed(1)))
    torch.testing.assert_close(factors_of(opt, layer)[0], a_ref)


def test_no_statistics_context_pauses_recording():
    model = tiny_mlp()
    opt = KFAC(model, kl_clip=None)
    with opt.no_statistics():
        model(torch.randn(4, 5, dtype=torch.float64))
    assert all(not layer.records for layer in opt.layers)
    model(torch.randn(4, 5, dtype=torch.float64))
    assert all(len(layer.records) == 1 for layer in opt.layers)


def test_stats_batch_size_uses_strided_subset():
    model = tiny_mlp()
    opt = KFAC(model, kl_clip=None, stats_batch_size=4)
    x = torch.randn(12, 5, dtype=torch.float64)
    logits = record_batch(opt, model, x, seed=5)
    step_with_lr_zero(opt, model, logits)
    layer = covered_layers(model)[0]
    a, g = factors_of(opt, layer)
    # Same labels as the optimizer (sampled on the full batch), then rows 0, 3, 6, 9.
    gen = torch.Generator().manual_seed(5)
    full = categorical_sampled_logp(model(x), gen)
    ref_model = model
    sub = x[::3]

    def logp_sub(out: torch.Tensor) -> torch.Tensor:
        # The sampled labels of the full batch, restricted to the subset.
        labels = torch.multinomial(torch.softmax(model(x).detach(), -1), 1, generator=torch.Generator().manual_seed(5))
        return torch.log_softmax(out, -1).gather(-1, labels[::3]).squeeze(-1)

    a_ref, g_ref = dense_factors(ref_model, layer, sub, logp_sub)
    assert full.shape[0] == 12
    torch.testing.assert_close(a, a_ref)
    torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("stats_dtype", ["bfloat16", torch.bfloat16, "torch.bfloat16"])
def test_bfloat16_statistics_round_only_the_products(stats_dtype):
    def factors(dtype: str | torch.dtype | None) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 7 * 7, 5))
        opt = KFAC(model, kl_clip=None, stats_dtype=dtype)
        out = model(torch.randn(64, 3, 16, 16))
        dist = torch.distributions.Categorical(logits=out)
        opt.record_fisher(dist.log_prob(dist.sample()).mean())
        opt.zero_grad()
        out.logsumexp(-1).mean().backward()
        opt.step()
        return [factor for layer in opt.layers for factor in (layer.curvature.factor_a, layer.curvature.factor_g)]

    exact, rounded = factors(None), factors(stats_dtype)
    for a, b in zip(exact, rounded):
        assert b.dtype == torch.float32  # the running factors keep the parameters' dtype
        error = ((a - b).norm() / a.norm()).item()
        # bfloat16 keeps 8 significant bits: the products differ (the option is in effect), by about 1e-3
        assert 0 < error < 1e-2
    # the homogeneous bias entry (the mean of 1 * 1) stays exact: the row count is not rounded
    assert rounded[0][-1, -1].item() == 1.0 and rounded[2][-1, -1].item() == 1.0


def test_ema_of_factors():
    model = tiny_mlp()
    opt = KFAC(model, kl_clip=None, stat_decay=0.5, inverse_interval=1)
    layer = covered_layers(model)[0]
    xs = [torch.randn(6, 5, dtype=torch.float64) for _ in range(3)]
    expected_a = None
    for i, x in enumerate(xs):
        logits = record_batch(opt, model, x, seed=i)
        a_ref, _ = dense_factors(
            model, layer, x, lambda out, i=i: categorical_sampled_logp(out, torch.Generator().manual_seed(i))
        )
        # running mean for n=0,1 (weights n/(n+1) <= 0.5), then EMA 0.5
        expected_a = a_ref if expected_a is None else 0.5 * expected_a + 0.5 * a_ref
        step_with_lr_zero(opt, model, logits)
        torch.testing.assert_close(factors_of(opt, layer)[0], expected_a)


# ---------------------------------------------------------------------------------------------- preconditioning


def one_step_delta(model: nn.Module, opt: KFAC, x: torch.Tensor, grad_seed: int = 7) -> dict[nn.Parameter, torch.Tensor]:
    """Record statistics on x, put random gradients in .grad, step with lr=1: returns -delta = F^-1 g."""
    logits = record_batch(opt, model, x, seed=1)
    del logits
    gen = torch.Generator().manual_seed(grad_seed)
    before = {p: p.detach().clone() for p in model.parameters()}
    for p in model.parameters():
        p.grad = torch.randn(p.shape, dtype=p.dtype, generator=gen)
    opt.step()
    return {p: before[p] - p.detach() for p in model.parameters()}


@pytest.mark.parametrize(
    "method, damping_type, dense_solve",
    [
        ("eigen", "kronecker", dense_kronecker_solve),
        ("eigen", "factored", dense_factored_solve),
        ("cholesky", "factored", dense_factored_solve),
    ],
)
@pytest.mark.parametrize("make_model, x_shape", [(tiny_mlp, (9, 5)), (tiny_cnn, (6, 2, 8, 8))])
def test_preconditioned_gradient_equals_dense_solve(method, damping_type, dense_solve, make_model, x_shape):
    model = make_model()
    damping = 0.03
    opt = KFAC(model, lr=1.0, momentum=0.0, damping=damping, kl_clip=None, inverse_method=method, damping_type=damping_type)
    x = torch.randn(*x_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    grads_before = {}
    delta = one_step_delta(model, opt, x)
    for p in model.parameters():
        grads_before[p] = p.grad.detach().clone()
    for layer in covered_layers(model):
        a, g = factors_of(opt, layer)
        expected = dense_solve(a, g, homogeneous_grad(layer), damping)
        got = delta[layer.weight].reshape(layer.weight.shape[0], -1)
        if layer.bias is not None:
            got = torch.cat([got, delta[layer.bias].reshape(-1, 1)], dim=1)
        torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-10)


class WithLogStd(nn.Module):
    """A linear softmax-free 'policy' with a bare parameter that no layer covers."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
        self.log_std = nn.Parameter(torch.zeros(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_uncovered_parameter_gets_first_order_step_and_counts_in_trust_region():
    torch.manual_seed(0)
    model = WithLogStd().double()
    lr, kl_clip = 2.0, 1e-3
    opt = KFAC(model, lr=lr, momentum=0.0, kl_clip=kl_clip)
    assert opt.uncovered_params == [model.log_std]
    x = torch.randn(20, 4, dtype=torch.float64)
    model.train()
    mean = model(x)
    dist = torch.distributions.Normal(mean, model.log_std.exp())
    opt.record_fisher(dist.log_prob(dist.sample()).sum(-1).mean())
    loss = (mean**2).mean() + (model.log_std - 1.0).pow(2).sum()
    opt.zero_grad()
    loss.backward()
    g_log_std = model.log_std.grad.clone()
    grads = {p: p.grad.clone() for p in model.parameters()}
    before = {p: p.detach().clone() for p in model.parameters()}
    opt.step()
    nu = opt.last_step_info["nu"]
    assert nu < 1.0  # the trust region is active
    torch.testing.assert_close(before[model.log_std] - model.log_std.detach(), lr * nu * g_log_std)
    # vFv includes <g, g> of log_std: recompute it from the applied step.
    vfv = sum(float(((before[p] - p.detach()) / (lr * nu) * grads[p]).sum()) for p in model.parameters()) * lr**2
    assert vfv == pytest.approx(opt.last_step_info["vFv"], rel=1e-9)
    assert vfv * nu**2 == pytest.approx(kl_clip, rel=1e-9)


# ---------------------------------------------------------------------------------------------- hypothesis


@st.composite
def conv_configs(draw):
    kernel = draw(st.integers(1, 3))
    stride = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2))
    padding = draw(st.one_of(st.integers(0, 2), st.just("same"))) if stride == 1 else draw(st.integers(0, 2))
    c_in = draw(st.integers(1, 3))
    c_out = draw(st.integers(1, 4))
    span = dilation * (kernel - 1) + 1
    size = draw(st.integers(max(span, 3), 7))
    bias = draw(st.booleans())
    batch = draw(st.integers(1, 4))
    return dict(
        kernel=kernel,
        stride=stride,
        dilation=dilation,
        padding=padding,
        c_in=c_in,
        c_out=c_out,
        size=size,
        bias=bias,
        batch=batch,
    )


@pytest.mark.parametrize("channels, height, width", [(3, 5, 4), (16, 2, 3)])  # C <= H*W (batched) and C > H*W
def test_conv_output_grad_moment_is_the_sum_over_samples_and_positions(channels, height, width):
    conv = nn.Conv2d(2, channels, 3)
    grad = torch.randn(4, channels, height, width, dtype=torch.float64)
    expected = sum(
        torch.outer(grad[i, :, h, w], grad[i, :, h, w]) for i in range(4) for h in range(height) for w in range(width)
    )
    torch.testing.assert_close(kronecker.output_grad_second_moment(conv, grad), expected)


def conv_model(cfg: dict) -> tuple[nn.Module, torch.Tensor]:
    """A convolution drawn by :func:`conv_configs`, a tanh and a linear head (float64), and an input batch."""
    torch.manual_seed(0)
    conv = nn.Conv2d(
        cfg["c_in"],
        cfg["c_out"],
        cfg["kernel"],
        stride=cfg["stride"],
        padding=cfg["padding"],
        dilation=cfg["dilation"],
        bias=cfg["bias"],
    ).double()
    x = torch.randn(cfg["batch"], cfg["c_in"], cfg["size"], cfg["size"], dtype=torch.float64)
    out_numel = conv(x).shape[1:].numel()
    return nn.Sequential(conv, nn.Tanh(), nn.Flatten(), nn.Linear(out_numel, 3)).double(), x


def assert_factors_and_step_match_dense(cfg: dict, damping: float, conv_factors: str = "expand") -> None:
    """Factors of every layer and the preconditioned step against the dense float64 definitions."""
    model, x = conv_model(cfg)
    opt = KFAC(model, lr=1.0, momentum=0.0, damping=damping, kl_clip=None, conv_factors=conv_factors)
    refs = [
        dense_factors(
            model, layer, x, lambda out: categorical_sampled_logp(out, torch.Generator().manual_seed(1)), conv_factors
        )
        for layer in covered_layers(model)
    ]
    delta = one_step_delta(model, opt, x)
    for layer, (a_ref, g_ref) in zip(covered_layers(model), refs):
        a, g = factors_of(opt, layer)
        torch.testing.assert_close(a, a_ref, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-11)
        expected = dense_kronecker_solve(a, g, homogeneous_grad(layer), damping)
        got = delta[layer.weight].reshape(layer.weight.shape[0], -1)
        if layer.bias is not None:
            got = torch.cat([got, delta[layer.bias].reshape(-1, 1)], dim=1)
        torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(cfg=conv_configs(), damping=st.floats(1e-3, 1.0))
def test_conv_shapes_against_dense(cfg, damping):
    assert_factors_and_step_match_dense(cfg, damping)


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=2, max_size=4),
    bias=st.booleans(),
    batch=st.integers(1, 6),
    method=st.sampled_from(["eigen", "cholesky"]),
)
def test_mlp_shapes_against_dense(sizes, bias, batch, method):
    torch.manual_seed(1)
    layers: list[nn.Module] = []
    for n_in, n_out in itertools.pairwise(sizes):
        layers += [nn.Linear(n_in, n_out, bias=bias), nn.Tanh()]
    model = nn.Sequential(*layers[:-1], nn.Linear(sizes[-1], 2)).double()
    damping = 0.05
    opt = KFAC(model, lr=1.0, momentum=0.0, damping=damping, kl_clip=None, inverse_method=method)
    x = torch.randn(batch, sizes[0], dtype=torch.float64)
    delta = one_step_delta(model, opt, x)
    solve = dense_kronecker_solve if method == "eigen" else dense_factored_solve
    for layer in covered_layers(model):
        a, g = factors_of(opt, layer)
        if torch.trace(g) <= 0:
            continue  # a layer that received no Fisher signal (e.g. a saturated softmax)
        expected = solve(a, g, homogeneous_grad(layer), damping)
        got = delta[layer.weight]
        if layer.bias is not None:
            got = torch.cat([got, delta[layer.bias].reshape(-1, 1)], dim=1)
        torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-9)


# ---------------------------------------------------------------------------------------------- trust region


def block_fisher_quadratic(opt: KFAC, model: nn.Module, delta: dict, damping: float) -> float:
    """delta^T F^ delta with F^ the damped K-FAC blocks (identity for uncovered parameters)."""
    total = 0.0
    for layer in covered_layers(model):
        a, g = factors_of(opt, layer)
        d = delta[layer.weight].reshape(layer.weight.shape[0], -1)
        if layer.bias is not None:
            d = torch.cat([d, delta[layer.bias].reshape(-1, 1)], dim=1)
        big = torch.kron(a, g) + damping * torch.eye(a.shape[0] * g.shape[0], dtype=a.dtype)
        total += float(vec(d) @ big @ vec(d))
    for p in opt.uncovered_params:
        total += float((delta[p] ** 2).sum())
    return total


@pytest.mark.parametrize("lr", [0.01, 0.3, 5.0])
def test_quadratic_kl_of_applied_step_never_exceeds_kl_clip(lr):
    model = tiny_cnn()
    kl_clip, damping = 1e-3, 0.01
    opt = KFAC(model, lr=lr, momentum=0.0, damping=damping, kl_clip=kl_clip)
    x = torch.randn(6, 2, 8, 8, dtype=torch.float64)
    delta = one_step_delta(model, opt, x)
    quad = block_fisher_quadratic(opt, model, delta, damping)
    assert quad <= kl_clip * (1 + 1e-9)
    if opt.last_step_info["nu"] < 1.0:
        assert quad == pytest.approx(kl_clip, rel=1e-9)
    else:
        assert quad == pytest.approx(opt.last_step_info["vFv"], rel=1e-9)


def test_exact_kl_of_softmax_policy_step_is_of_order_kl_clip():
    """Seed 001 appendix E: the exact KL after a trust-region step is close to the radius."""
    torch.manual_seed(0)
    policy = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 4)).double()
    states = torch.randn(4000, 6, dtype=torch.float64)
    kl_values = []
    for kl_clip in (1e-3, 1e-2):
        model = copy.deepcopy(policy)
        opt = KFAC(model, lr=1.0, momentum=0.0, damping=1e-3, kl_clip=kl_clip)
        gen = torch.Generator().manual_seed(0)
        logits = model(states)
        opt.record_fisher(categorical_sampled_logp(logits, gen).mean())
        actions = torch.distributions.Categorical(logits=logits.detach()).sample()
        advantages = torch.randn(states.shape[0], dtype=torch.float64, generator=gen)
        loss = -(advantages * torch.log_softmax(logits, -1).gather(-1, actions[:, None]).squeeze(-1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert opt.last_step_info["nu"] < 1.0
        with torch.no_grad():
            old = torch.log_softmax(logits.detach(), -1)
            new = torch.log_softmax(model(states), -1)
            kl = float((old.exp() * (old - new)).sum(-1).mean())
        kl_values.append(kl)
        # The K-FAC quadratic model predicts KL ~= kl_clip / 2; the exact value must be of that order.
        assert 0.25 * kl_clip < kl < 2.0 * kl_clip, (kl_clip, kl)
    # and it scales with the radius
    assert 3.0 < kl_values[1] / kl_values[0] < 30.0


# ---------------------------------------------------------------------------------------------- optimisation


def test_trains_classifier_better_than_sgd():
    """On ill-conditioned synthetic data K-FAC beats SGD given the same learning-rate grid and step count."""
    gen = torch.Generator().manual_seed(0)
    n, d, k = 512, 10, 4
    centers = torch.randn(k, d, generator=gen) * 2
    labels = torch.randint(0, k, (n,), generator=gen)
    x = centers[labels] + torch.randn(n, d, generator=gen)
    x = x * torch.logspace(-1.5, 1.5, d)  # badly scaled features
    torch.manual_seed(0)
    init = nn.Sequential(nn.Linear(d, 32), nn.Tanh(), nn.Linear(32, k))
    lrs = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
    steps = 60

    def final_loss(make_opt) -> float:
        model = copy.deepcopy(init)
        opt = make_opt(model)
        for _ in range(steps):
            logits = model(x)
            if isinstance(opt, KFAC):
                opt.record_fisher(categorical_sampled_logp(logits, gen).mean())
            loss = nn.functional.cross_entropy(logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            value = float(nn.functional.cross_entropy(model(x), labels))
        return value if math.isfinite(value) else float("inf")

    best_sgd = min(final_loss(lambda m, lr=lr: torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9)) for lr in lrs)
    best_kfac = min(
        final_loss(lambda m, lr=lr: KFAC(m, lr=lr, momentum=0.9, damping=1e-2, kl_clip=None, inverse_interval=5)) for lr in lrs
    )
    assert best_kfac < 0.5 * best_sgd, (best_kfac, best_sgd)


def test_warmup_is_clipped_momentum_sgd():
    model = tiny_mlp()
    opt = KFAC(model, lr=0.5, momentum=0.9, warmup_steps=2, warmup_max_grad_norm=0.1)
    x = torch.randn(9, 5, dtype=torch.float64)
    buffers = None
    for _ in range(2):
        assert opt.in_warmup
        logits = record_batch(opt, model, x)
        opt.zero_grad()
        (logits**2).sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        clipped = [g * min(1.0, 0.1 / (float(norm) + 1e-6)) for g in grads]
        buffers = clipped if buffers is None else [0.9 * b + c for b, c in zip(buffers, clipped)]
        before = [p.detach().clone() for p in model.parameters()]
        opt.step()
        for p, b0, buf in zip(model.parameters(), before, buffers):
            torch.testing.assert_close(b0 - p.detach(), 0.5 * buf)
    assert not opt.in_warmup
    assert opt.curvature(covered_layers(model)[0]).factor_a is not None  # statistics accumulated during warm-up


def test_lr_is_read_from_param_groups():
    deltas = []
    for lr in (0.1, 0.2):
        model = tiny_mlp()
        opt = KFAC(model, lr=123.0, momentum=0.0, kl_clip=None)
        opt.param_groups[0]["lr"] = lr
        delta = one_step_delta(model, opt, torch.randn(9, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
        deltas.append(delta[covered_layers(model)[0].weight])
    torch.testing.assert_close(deltas[1], 2 * deltas[0])


# ---------------------------------------------------------------------------------------------- persistence


def train_step(m: nn.Module, o: KFAC, x: torch.Tensor) -> None:
    """One step on a cross-entropy loss with statistics (the sampled-Fisher pass of ``record_batch``)."""
    logits = record_batch(o, m, x, seed=11)
    o.zero_grad()
    (logits.logsumexp(-1) - logits[:, 0]).mean().backward()
    o.step()


@pytest.mark.parametrize("method", ["eigen", "cholesky"])
def test_state_dict_round_trip_takes_identical_next_step(method):
    model = tiny_cnn()
    opt = KFAC(model, lr=0.2, momentum=0.9, inverse_method=method, inverse_interval=2, warmup_steps=1)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(5, 2, 8, 8, dtype=torch.float64, generator=gen) for _ in range(5)]

    for x in batches[:4]:
        train_step(model, opt, x)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    restored = tiny_cnn(seed=99)
    restored.load_state_dict(saved["model"])
    restored_opt = KFAC(restored, lr=0.2, momentum=0.9, inverse_method=method, inverse_interval=2, warmup_steps=1)
    restored_opt.load_state_dict(saved["opt"])
    assert restored_opt.steps == opt.steps == 4

    train_step(model, opt, batches[4])
    train_step(restored, restored_opt, batches[4])
    for p, q in zip(model.parameters(), restored.parameters()):
        assert torch.equal(p, q)


class _WithLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 4, batch_first=True)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 2)
        self.log_std = nn.Parameter(torch.zeros(2))  # the model's own parameter: first order by design, no warning

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.lstm(x)[0][:, -1]))


@pytest.mark.bad_input
def test_layers_left_to_first_order_are_named_in_a_warning():
    with pytest.warns(UserWarning, match=r"first-order steps.*: lstm \(LSTM\), norm \(LayerNorm\); name them in skip_modules"):
        opt = KFAC(_WithLSTM())
    assert [layer.name for layer in opt.layers] == ["head"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        KFAC(_WithLSTM(), skip_modules=("lstm", "norm"))
        KFAC(tiny_mlp())


@pytest.mark.bad_input
@pytest.mark.parametrize("stats_interval", [1, 2])
def test_a_fisher_loss_that_is_not_a_scalar_is_refused_on_every_step(stats_interval):
    # Also on steps without statistics, where it used to be accepted silently.
    model = tiny_mlp()
    opt = KFAC(model, stats_interval=stats_interval)
    x = torch.randn(4, 5, dtype=torch.float64)
    for _ in range(2):
        logits = model(x)
        with pytest.raises(ValueError, match=r"KFAC.record_fisher: fisher_loss must be a scalar tensor, got \(4,\)"):
            opt.record_fisher(categorical_sampled_logp(logits, torch.Generator().manual_seed(0)))
        opt.record_fisher(categorical_sampled_logp(logits, torch.Generator().manual_seed(0)).mean())
        opt.zero_grad()
        logits.sum().backward()
        opt.step()


def test_reset_equals_a_new_optimizer_on_the_same_weights():
    # reset() forgets factors, decompositions, momentum and the step count (warm-up again): from then on the optimizer
    # takes exactly the steps of a new KFAC built on the current weights, and its state_dict is a new one's.
    model = tiny_cnn()
    settings = dict(lr=0.2, momentum=0.9, inverse_interval=2, warmup_steps=2, async_inverse=False)
    opt = KFAC(model, **settings)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(5, 2, 8, 8, dtype=torch.float64, generator=gen) for _ in range(8)]

    for x in batches[:5]:
        train_step(model, opt, x)
    assert opt.steps == 5 and opt.state
    opt.reset()
    fresh_model = copy.deepcopy(model)
    fresh_opt = KFAC(fresh_model, **settings)
    assert opt.steps == 0 and opt.in_warmup and not opt.state
    assert opt.state_dict()["kfac"] == fresh_opt.state_dict()["kfac"]
    assert opt.state_dict()["state"] == fresh_opt.state_dict()["state"] == {}
    for x in batches[5:]:
        train_step(model, opt, x)
        train_step(fresh_model, fresh_opt, x)
    assert opt.steps == 3
    for p, q in zip(model.parameters(), fresh_model.parameters()):
        assert torch.equal(p, q)


def test_the_curvature_record_keeps_the_saved_format():
    # Files written before the Curvature record held these entries in the optimizer state of each covered weight;
    # state_dict still writes them, and load_state_dict turns them back into the records.
    model = tiny_mlp()
    opt = KFAC(model, lr=0.1, inverse_interval=1)
    train_steps(model, opt, 3)
    saved = opt.state_dict()
    weight_index = [p for group in opt.param_groups for p in group["params"]].index(opt.layers[0].weight)
    expected = {"A", "G", "n_stats", "stats_version", "has_inverse", "inverse_version", "d_a", "q_a", "d_g", "q_g"}
    assert set(saved["state"][weight_index]) == expected | {"inverse_damping", "momentum_buffer"}
    assert saved["state"][weight_index]["n_stats"] == saved["state"][weight_index]["stats_version"] == 3
    restored = KFAC(copy.deepcopy(model), lr=0.1, inverse_interval=1)
    restored.load_state_dict(saved)
    for layer, twin in zip(opt.layers, restored.layers):
        assert torch.equal(layer.curvature.factor_a, twin.curvature.factor_a)
        assert torch.equal(layer.curvature.inverse["q_g"], twin.curvature.inverse["q_g"])
        assert (layer.curvature.n_stats, layer.curvature.inverse_version) == (twin.curvature.n_stats, 3)
        assert set(restored.state[twin.weight]) == {"momentum_buffer"}  # the rest lives in the record
    with pytest.raises(KeyError, match="does not cover the layer 'nope'"):
        opt.curvature("nope")


def test_records_are_released_every_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))
    opt = KFAC(model, lr=0.01, inverse_interval=50)
    x = torch.randn(32, 8)
    for _ in range(2000):
        logits = model(x)
        opt.record_fisher(categorical_sampled_logp(logits, torch.Generator().manual_seed(0)).mean())
        opt.zero_grad()
        logits.pow(2).mean().backward()
        opt.step()
        assert all(not layer.records and layer.a_sum is None and layer.g_sum is None for layer in opt.layers)
    # no per-step growth of the persistent state either
    sizes = {k: len(v) for k, v in opt.state.items()}
    assert max(sizes.values()) <= 12


def test_async_inverse_matches_synchronous_decomposition():
    model = tiny_mlp()
    opt = KFAC(model, lr=0.1, inverse_interval=1, async_inverse=True)
    x = torch.randn(9, 5, dtype=torch.float64)
    for i in range(4):
        logits = record_batch(opt, model, x, seed=i)
        opt.zero_grad()
        logits.pow(2).mean().backward()
        opt.step()
    opt.wait_for_inverses()
    for layer in covered_layers(model):
        curvature = opt.curvature(layer)
        d_a = torch.linalg.eigvalsh(curvature.factor_a).clamp(min=0)
        # the installed eigenvalues are those of a (possibly one step older) factor; after waiting they are current
        if curvature.inverse_version == curvature.stats_version:
            torch.testing.assert_close(curvature.inverse["d_a"], d_a)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    opt.remove_hooks()


# ---------------------------------------------------------------------------------------------- robustness


def train_steps(model: nn.Module, opt: KFAC, n: int, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(9, 5, dtype=torch.float64, generator=gen)
        logits = record_batch(opt, model, x, seed=seed)
        opt.zero_grad()
        logits.pow(2).mean().backward()
        opt.step()


@pytest.mark.bad_input
def test_nan_gradient_skips_step_and_keeps_parameters():
    model = tiny_mlp()
    opt = KFAC(model, lr=0.1, inverse_interval=1)
    train_steps(model, opt, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    buffers = {p: opt.state[p]["momentum_buffer"].clone() for p in model.parameters()}
    logits = record_batch(opt, model, torch.randn(9, 5, dtype=torch.float64))
    opt.zero_grad()
    logits.pow(2).mean().backward()
    covered_layers(model)[1].weight.grad[0, 0] = float("nan")
    with pytest.warns(RuntimeWarning, match="non-finite gradient"):
        opt.step()
    assert opt.counters["skipped_steps"] == 1
    assert opt.steps == 3
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    for p in model.parameters():
        assert torch.equal(opt.state[p]["momentum_buffer"], buffers[p])
    train_steps(model, opt, 2, seed=1)  # and training goes on
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.bad_input
def test_nan_factor_falls_back_to_last_good_inverse_and_recovers():
    model = tiny_mlp()
    opt = KFAC(model, lr=0.1, inverse_interval=1)
    train_steps(model, opt, 3)
    layer = covered_layers(model)[0]
    curvature = opt.curvature(layer)
    last_q = curvature.inverse["q_a"].clone()
    curvature.factor_a[0, 0] = float("nan")
    with pytest.warns(RuntimeWarning, match="could not be decomposed"):
        train_steps(model, opt, 1, seed=5)
    assert opt.counters["inverse_fallbacks"] == 1
    assert torch.equal(curvature.inverse["q_a"], last_q)  # previous inverse kept
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train_steps(model, opt, 2, seed=6)
    assert torch.isfinite(curvature.factor_a).all()  # statistics restarted from fresh batches
    assert not torch.equal(curvature.inverse["q_a"], last_q)


@pytest.mark.bad_input
def test_failed_decomposition_without_previous_inverse_uses_first_order_step(monkeypatch):
    model = tiny_mlp()
    opt = KFAC(model, lr=0.1, momentum=0.0, kl_clip=None)

    def broken_eigh(*args, **kwargs):
        raise torch.linalg.LinAlgError("injected failure")

    monkeypatch.setattr(torch.linalg, "eigh", broken_eigh)
    logits = record_batch(opt, model, torch.randn(9, 5, dtype=torch.float64))
    opt.zero_grad()
    logits.pow(2).mean().backward()
    grads = {p: p.grad.clone() for p in model.parameters()}
    before = {p: p.detach().clone() for p in model.parameters()}
    with pytest.warns(RuntimeWarning):
        opt.step()
    assert opt.counters["inverse_fallbacks"] == 2
    for p in model.parameters():
        torch.testing.assert_close(before[p] - p.detach(), 0.1 * grads[p])


@pytest.mark.bad_input
def test_non_finite_fisher_statistics_are_rejected():
    model = tiny_mlp()
    opt = KFAC(model, lr=0.1, inverse_interval=1)
    train_steps(model, opt, 2)
    a_before = opt.curvature(covered_layers(model)[0]).factor_a.clone()
    logits = model(torch.randn(9, 5, dtype=torch.float64))
    opt.record_fisher(logits.sum() * float("nan"))
    opt.zero_grad()
    logits.pow(2).mean().backward()
    with pytest.warns(RuntimeWarning, match="non-finite statistics"):
        opt.step()
    assert opt.counters["rejected_stats"] >= 1
    assert torch.equal(opt.curvature(covered_layers(model)[0]).factor_a, a_before)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.bad_input
def test_step_without_statistics_after_warmup_raises():
    model = tiny_mlp()
    opt = KFAC(model)
    model(torch.randn(3, 5, dtype=torch.float64)).sum().backward()
    with pytest.raises(RuntimeError, match="record_fisher"):
        opt.step()


# ---------------------------------------------------------------------------------------------- bad arguments


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(damping=-0.1), "damping"),
        (dict(lr=-1.0), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(kl_clip=0.0), "kl_clip"),
        (dict(kl_clip=-1e-3), "kl_clip"),
        (dict(stat_decay=1.0), "stat_decay"),
        (dict(stat_decay=-0.1), "stat_decay"),
        (dict(momentum=1.0), "momentum"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(stats_interval=0), "stats_interval"),
        (dict(inverse_interval=1.5), "inverse_interval"),
        (dict(warmup_steps=-1), "warmup_steps"),
        (dict(inverse_method="svd"), "inverse_method"),
        (dict(damping_type="diagonal"), "damping_type"),
        (dict(inverse_method="cholesky", damping_type="kronecker"), "damping_type"),
        (dict(inverse_method="cholesky", damping=0.0), "damping"),
        (dict(stats_batch_size=0), "stats_batch_size"),
        (dict(stats_dtype="float16"), "stats_dtype"),
        (dict(stats_dtype=torch.int32), "stats_dtype"),
        (dict(stats_dtype="half-precision"), "stats_dtype"),
        (dict(skip_modules=["nope"]), "skip_modules"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        KFAC(tiny_mlp(), **kwargs)


@pytest.mark.bad_input
def test_model_without_coverable_layer_is_rejected():
    with pytest.raises(ValueError, match="no layer K-FAC can cover"):
        KFAC(nn.Sequential(nn.LayerNorm(4)))
    with pytest.raises(ValueError, match="no layer K-FAC can cover"):
        KFAC(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(TypeError, match=r"nn\.Module"):
        KFAC([nn.Parameter(torch.zeros(3))])  # type: ignore[arg-type]


@pytest.mark.bad_input
def test_a_second_parameter_group_is_refused() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    opt = KFAC(model)
    assert len(opt.param_groups) == 1
    with pytest.raises(ValueError, match="add_param_group"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(2))]})
