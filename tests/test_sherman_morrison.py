"""
Tests for the Sherman–Morrison / WoodFisher / Woodbury natural-gradient preconditioner.

Every exactness check compares against an independent dense float64 computation in NumPy (``np.linalg.solve``
of the explicitly built ``d x d`` damped empirical Fisher) or against per-sample gradients obtained one sample at
a time with ``torch.autograd.grad``.
"""

from __future__ import annotations

import itertools
import math
import resource
import time

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from sb3_natgrad.optim.sherman_morrison import (
    LinearGramRecorder,
    ShermanMorrison,
    diag_gaussian_log_std_scores,
    kernel_weights,
    per_sample_param_scores,
    per_sample_scores,
    score_gram,
    score_projections,
    sherman_morrison_direction,
    trust_region_step_size,
    woodbury_direction,
    woodfisher_apply,
    woodfisher_direction,
    woodfisher_factors,
)

# --------------------------------------------------------------------------------------------------------------
# Helpers: random problems and dense references
# --------------------------------------------------------------------------------------------------------------

problem_sizes = st.tuples(
    st.integers(min_value=1, max_value=24),  # d
    st.integers(min_value=1, max_value=10),  # M
    st.floats(min_value=1e-3, max_value=10.0),  # damping
    st.floats(min_value=1e-2, max_value=10.0),  # score scale (|psi|^2 from << to >> damping)
    st.integers(min_value=0, max_value=2**31 - 1),  # seed
)


def random_problem(d: int, m: int, scale: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (grad [d], scores [M, d], coefficients [M]) in float64."""
    gen = torch.Generator().manual_seed(seed)
    scores = scale * torch.randn(m, d, generator=gen, dtype=torch.float64)
    grad = torch.randn(d, generator=gen, dtype=torch.float64)
    coefficients = torch.randn(m, generator=gen, dtype=torch.float64)
    return grad, scores, coefficients


def dense_batch_fisher(scores: torch.Tensor, damping: float) -> np.ndarray:
    """lambda I + (1/M) sum_i psi_i psi_i^T, built explicitly."""
    s = scores.numpy()
    m, d = s.shape
    fisher = damping * np.eye(d)
    for i in range(m):
        fisher += np.outer(s[i], s[i]) / m
    return fisher


def dense_rank1_fisher(score: torch.Tensor, damping: float) -> np.ndarray:
    """lambda I + psi psi^T, built explicitly."""
    v = score.numpy()
    return damping * np.eye(v.shape[0]) + np.outer(v, v)


def direction_bound(expected: np.ndarray, grad: torch.Tensor, damping: float) -> float:
    """
    Error allowed on F^-1 g: small relative to the natural scale |g|/lambda (an upper bound on |F^-1 g|) and to
    |expected|. The first term is the conditioning of the solve: with a tiny damping and large scores the Woodbury
    form loses about cond(K + M lambda I) * eps of |w| (e.g. d=1, M=6, lambda=1e-3, scores ~7: 4e-6 relative).
    """
    return 1e-9 * float(grad.norm()) / damping + 1e-7 * float(np.linalg.norm(expected))


def assert_direction_close(actual: torch.Tensor, expected: np.ndarray, grad: torch.Tensor, damping: float) -> None:
    err = np.linalg.norm(actual.detach().numpy() - expected)
    bound = direction_bound(expected, grad, damping)
    assert err <= bound, f"error {err:.3e} > {bound:.3e}"


# --------------------------------------------------------------------------------------------------------------
# Exactness of the three modes
# --------------------------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(problem_sizes)
def test_mean_mode_matches_dense_solve(problem: tuple[int, int, float, float, int]) -> None:
    d, m, damping, scale, seed = problem
    grad, scores, _ = random_problem(d, m, scale, seed)
    psi = scores.mean(dim=0)
    expected = np.linalg.solve(dense_rank1_fisher(psi, damping), grad.numpy())

    assert_direction_close(sherman_morrison_direction(grad, psi, damping), expected, grad, damping)
    sm = ShermanMorrison(damping=damping, fisher="mean")
    assert_direction_close(sm.compute(grad, psi).direction, expected, grad, damping)
    # a [M, d] score matrix is averaged over samples in "mean" mode
    assert_direction_close(sm.compute(grad, scores).direction, expected, grad, damping)
    # a single-sample score (seed 004 §4.1) is just another Fisher vector
    expected_single = np.linalg.solve(dense_rank1_fisher(scores[0], damping), grad.numpy())
    assert_direction_close(sm.compute(grad, scores[0]).direction, expected_single, grad, damping)


@settings(max_examples=30, deadline=None)
@given(problem_sizes)
def test_sample_mode_matches_dense_inverse(problem: tuple[int, int, float, float, int]) -> None:
    d, m, damping, scale, seed = problem
    grad, scores, _ = random_problem(d, m, scale, seed)
    fisher = dense_batch_fisher(scores, damping)
    expected = np.linalg.solve(fisher, grad.numpy())

    assert_direction_close(woodfisher_direction(grad, scores, damping), expected, grad, damping)
    sm = ShermanMorrison(damping=damping, fisher="sample")
    assert_direction_close(sm.compute(grad, scores).direction, expected, grad, damping)

    # H_M itself is the dense inverse: apply it to every basis vector.
    factors, denominators = woodfisher_factors(scores, damping)
    columns = [woodfisher_apply(e, factors, denominators, damping) for e in torch.eye(d, dtype=torch.float64)]
    inverse = torch.stack(columns, dim=1).numpy()
    np.testing.assert_allclose(inverse, np.linalg.inv(fisher), rtol=1e-7, atol=1e-9 / damping)


@settings(max_examples=30, deadline=None)
@given(problem_sizes)
def test_batch_mode_matches_dense_solve(problem: tuple[int, int, float, float, int]) -> None:
    d, m, damping, scale, seed = problem
    grad, scores, _ = random_problem(d, m, scale, seed)
    expected = np.linalg.solve(dense_batch_fisher(scores, damping), grad.numpy())

    assert_direction_close(woodbury_direction(grad, scores, damping), expected, grad, damping)
    sm = ShermanMorrison(damping=damping, fisher="batch")
    assert_direction_close(sm.compute(grad, scores).direction, expected, grad, damping)
    assert_direction_close(sm.solve(grad, scores), expected, grad, damping)


@settings(max_examples=30, deadline=None)
@given(problem_sizes)
@example((1, 6, 0.001, 7.0, 55))  # found by hypothesis in a CI run: |d| off by 4e-6 relative, within the bound
def test_kernel_weights_give_dense_natural_gradient(problem: tuple[int, int, float, float, int]) -> None:
    d, m, damping, scale, seed = problem
    _, scores, coefficients = random_problem(d, m, scale, seed)
    # g = (1/M) sum_i a_i psi_i, built in NumPy
    g = scores.numpy().T @ coefficients.numpy() / m
    fisher = dense_batch_fisher(scores, damping)
    expected = np.linalg.solve(fisher, g)
    grad = torch.from_numpy(g)

    weights = kernel_weights(score_gram(scores), coefficients, damping)
    assert_direction_close(scores.T @ weights, expected, grad, damping)

    # compute_kernel: same weights, and the statistics from K alone equal dense ones
    step = ShermanMorrison(damping=damping, fisher="batch", step_size=0.5, max_kl=0.01).compute_kernel(
        score_gram(scores), coefficients
    )
    assert step.direction is None and not step.skipped
    assert_direction_close(scores.T @ step.weights, expected, grad, damping)
    gfg = float(g @ expected)
    scale_ref = max(abs(gfg), 1e-300)
    assert abs(step.stats["gFg"] - gfg) <= 1e-7 * scale_ref + 1e-12
    # |(|d| - |d_expected|)| <= |d - d_expected|: the direction's own bound (a fixed rel=1e-6 failed on an
    # ill-conditioned example that the direction check accepts, pinned below with @example)
    bound = direction_bound(expected, grad, damping)
    assert abs(step.stats["natural_grad_norm"] - np.linalg.norm(expected)) <= bound
    assert step.stats["grad_norm"] == pytest.approx(np.linalg.norm(g), rel=1e-6, abs=1e-12)
    if np.linalg.norm(g) > 1e-12:
        cos = gfg / (np.linalg.norm(g) * np.linalg.norm(expected))
        rel = 1e-6 + bound / max(float(np.linalg.norm(expected)), 1e-300)  # cos carries the relative error of |d|
        assert step.stats["fisher_alignment"] == pytest.approx(cos, rel=rel, abs=1e-9)
        alpha = min(0.5, math.sqrt(2 * 0.01 / (expected @ fisher @ expected)))
        assert step.step_size == pytest.approx(alpha, rel=1e-6)


def test_modes_agree_in_float32() -> None:
    """float32 inputs give float32 outputs close to the float64 dense answer (M x M solves run in float64)."""
    grad, scores, _ = random_problem(50, 20, 1.0, 123)
    damping = 0.1
    expected = np.linalg.solve(dense_batch_fisher(scores, damping), grad.numpy())
    for fisher in ("sample", "batch"):
        out = ShermanMorrison(damping=damping, fisher=fisher).compute(grad.float(), scores.float()).direction
        assert out.dtype == torch.float32
        np.testing.assert_allclose(out.double().numpy(), expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


# --------------------------------------------------------------------------------------------------------------
# Gram matrix of per-sample gradients
# --------------------------------------------------------------------------------------------------------------


def loop_per_sample_grads(log_probs: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
    """Per-sample gradients one backward at a time (the independent reference), shape [M, d]."""
    rows = []
    for i in range(log_probs.shape[0]):
        grads = torch.autograd.grad(log_probs[i], params, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params, strict=True)])
        )
    return torch.stack(rows)


def make_mlp(obs_dim: int, out_dim: int, last_bias: bool = True) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(obs_dim, 7), nn.Tanh(), nn.Linear(7, 5), nn.Tanh(), nn.Linear(5, out_dim, bias=last_bias)
    ).double()


def test_gram_recorder_categorical_matches_explicit_per_sample_grads() -> None:
    torch.manual_seed(0)
    m, obs_dim, n_actions = 13, 4, 3
    net = make_mlp(obs_dim, n_actions, last_bias=False)  # covers a weight-only layer too
    params = list(net.parameters())
    obs = torch.randn(m, obs_dim, dtype=torch.float64)
    actions = torch.randint(n_actions, (m,))

    recorder = LinearGramRecorder(net)
    with recorder:
        logits = net(obs)
    log_probs = torch.distributions.Categorical(logits=logits).log_prob(actions)
    gram = recorder.gram(log_probs)

    per_sample = loop_per_sample_grads(log_probs, params)
    torch.testing.assert_close(gram, per_sample @ per_sample.T, rtol=1e-10, atol=1e-12)
    assert {id(p) for p in recorder.covered_parameters()} == {id(p) for p in params}

    # torch.func path (general fallback) against the loop
    names = [n for n, _ in net.named_parameters()]

    def log_prob_fn(p: dict[str, torch.Tensor], o: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(net, p, (o.unsqueeze(0),)).squeeze(0)
        return torch.log_softmax(out, dim=-1).gather(0, a.reshape(1)).squeeze(0)

    func_scores = per_sample_scores(log_prob_fn, dict(net.named_parameters()), obs, actions, chunk_size=5)
    assert list(dict(net.named_parameters())) == names
    torch.testing.assert_close(func_scores, per_sample, rtol=1e-10, atol=1e-12)

    # Kernel form end to end: one weighted backward gives the dense F_M^-1 g.
    damping = 0.05
    advantages = torch.randn(m, dtype=torch.float64)
    weights = kernel_weights(gram, advantages, damping)
    direction = torch.cat([g.reshape(-1) for g in torch.autograd.grad((weights * log_probs).sum(), params, retain_graph=True)])
    s = per_sample.numpy()
    g = s.T @ advantages.numpy() / m
    expected = np.linalg.solve(damping * np.eye(s.shape[1]) + s.T @ s / m, g)
    assert_direction_close(direction, expected, torch.from_numpy(g), damping)

    # Woodbury for an arbitrary g (not in the span of the scores), still without per-sample gradients:
    # U^T g by double backward, then one weighted backward.
    g_any = torch.randn(s.shape[1], dtype=torch.float64)
    projections = score_projections(log_probs, params, g_any)
    torch.testing.assert_close(projections, per_sample @ g_any, rtol=1e-10, atol=1e-12)
    y = kernel_weights(gram, projections, damping)
    u_y = torch.cat([t.reshape(-1) for t in torch.autograd.grad((y * log_probs).sum(), params, retain_graph=True)])
    direction_any = (g_any - u_y) / damping
    expected_any = np.linalg.solve(damping * np.eye(s.shape[1]) + s.T @ s / m, g_any.numpy())
    assert_direction_close(direction_any, expected_any, g_any, damping)
    # its step and statistics agree with the score-matrix route
    sm = ShermanMorrison(damping=damping, fisher="batch", step_size=10.0, max_kl=1e-3)
    via_direction = sm.step_from_direction(g_any, direction_any)
    via_scores = sm.compute(g_any, per_sample)
    assert via_direction.step_size == pytest.approx(via_scores.step_size, rel=1e-8)
    for key in ("natural_grad_norm", "grad_norm", "fisher_alignment", "gFg", "kl_estimate"):
        assert via_direction.stats[key] == pytest.approx(via_scores.stats[key], rel=1e-8)


def test_gram_recorder_gaussian_with_log_std_matches_explicit_per_sample_grads() -> None:
    torch.manual_seed(1)
    m, obs_dim, act_dim = 11, 3, 2
    net = make_mlp(obs_dim, act_dim)
    net[0].weight.requires_grad_(False)  # a frozen weight with a trainable bias: bias-only Gram term
    log_std = nn.Parameter(0.3 * torch.randn(act_dim, dtype=torch.float64))
    params = [p for p in net.parameters() if p.requires_grad] + [log_std]
    obs = torch.randn(m, obs_dim, dtype=torch.float64)

    recorder = LinearGramRecorder([net])
    with recorder:
        mean = net(obs)
    dist = torch.distributions.Normal(mean, log_std.exp())
    actions = dist.sample()
    log_probs = dist.log_prob(actions).sum(dim=-1)

    per_sample = loop_per_sample_grads(log_probs, params)
    log_std_ref = per_sample[:, -act_dim:]

    closed_form = diag_gaussian_log_std_scores(actions, mean, log_std)
    torch.testing.assert_close(closed_form, log_std_ref, rtol=1e-10, atol=1e-12)
    batched = per_sample_param_scores(log_probs, [log_std], chunk_size=4)
    torch.testing.assert_close(batched, log_std_ref, rtol=1e-10, atol=1e-12)

    reference = per_sample @ per_sample.T
    gram_without = recorder.gram(log_probs)
    gram = recorder.gram(log_probs, extra_scores=closed_form)
    torch.testing.assert_close(gram, reference, rtol=1e-10, atol=1e-12)
    # the leftover parameter matters: leaving it out gives a different Gram
    assert (gram_without - reference).abs().max() > 1e-3
    covered = {id(p) for p in recorder.covered_parameters()}
    assert covered == {id(p) for p in params[:-1]}


@pytest.mark.bad_input
def test_gram_recorder_rejects_layer_applied_twice_and_no_grad() -> None:
    layer = nn.Linear(3, 3).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    recorder = LinearGramRecorder(layer)
    with recorder:
        out = layer(torch.tanh(layer(x)))
    with pytest.raises(ValueError, match="applied 2 times"):
        recorder.gram(out.sum(dim=1))
    with recorder, torch.no_grad():
        out = layer(x)
    with pytest.raises(ValueError, match="require gradients"):
        recorder.gram(out.sum(dim=1))
    with pytest.raises(ValueError, match="modules"):
        LinearGramRecorder(nn.Tanh())


# --------------------------------------------------------------------------------------------------------------
# "mean" mode is O(d): no d x d matrix
# --------------------------------------------------------------------------------------------------------------


class AllocationTracker(TorchDispatchMode):
    """Records every tensor produced by an ATen op: total bytes (an upper bound on extra peak memory) and max numel."""

    def __init__(self) -> None:
        super().__init__()
        self.total_bytes = 0
        self.max_numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.total_bytes += leaf.numel() * leaf.element_size()
                self.max_numel = max(self.max_numel, leaf.numel())
        return out


def test_mean_mode_is_linear_in_d_for_a_million_parameters() -> None:
    d = 1_000_000  # a d x d float32 Fisher would be 4 TB
    gen = torch.Generator().manual_seed(0)
    grad = torch.randn(d, generator=gen)
    psi = torch.randn(d, generator=gen) * 1e-3
    sm = ShermanMorrison(damping=0.1, fisher="mean", step_size=0.1, max_kl=0.01)
    sm.compute(grad, psi)  # warm-up

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    step = sm.compute(grad, psi)
    elapsed = time.perf_counter() - start
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert elapsed < 1.0, f"mean-mode direction for d=1e6 took {elapsed:.3f} s"
    assert rss_growth_mb < 100, f"peak RSS grew by {rss_growth_mb:.1f} MB"

    with AllocationTracker() as tracker:
        sm.compute(grad, psi)
    assert tracker.max_numel <= d  # no tensor larger than one parameter vector
    assert tracker.total_bytes < 100 * 2**20, f"{tracker.total_bytes / 2**20:.1f} MB allocated in total"

    # and it is the Sherman–Morrison answer (coordinates checked on a subset, in float64)
    g64, p64 = grad.double(), psi.double()
    ref = (g64 - p64 * (p64 @ g64) / (0.1 + p64 @ p64)) / 0.1
    idx = torch.randint(d, (1000,), generator=gen)
    torch.testing.assert_close(step.direction[idx].double(), ref[idx], rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------------------------
# Step size
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fisher", ["mean", "sample", "batch"])
@pytest.mark.parametrize("max_kl", [1e-4, 1e-2, 1e3])
def test_trust_region_step_satisfies_the_quadratic_kl_bound(fisher: str, max_kl: float) -> None:
    damping, step_max = 0.1, 2.0
    for seed in range(5):
        grad, scores, _ = random_problem(9, 6, 1.0 + seed, seed)
        sm = ShermanMorrison(damping=damping, fisher=fisher, step_size=step_max, max_kl=max_kl)
        step = sm.compute(grad, scores)
        fisher_dense = dense_rank1_fisher(scores.mean(0), damping) if fisher == "mean" else dense_batch_fisher(scores, damping)
        update = step.update().numpy()
        kl = 0.5 * update @ fisher_dense @ update
        assert kl <= max_kl * (1 + 1e-9)
        if step.step_size < step_max:
            assert kl == pytest.approx(max_kl, rel=1e-9)
        else:  # the bound does not bind: alpha_max is used
            assert step.step_size == step_max
            assert kl <= max_kl
        assert step.stats["kl_estimate"] == pytest.approx(kl, rel=1e-9)
        assert step.stats["step_size"] == step.step_size
    # large radius -> alpha_max, tiny radius -> alpha < alpha_max (both branches exercised)
    if max_kl == 1e3:
        assert step.step_size == step_max
    if max_kl == 1e-4:
        assert step.step_size < step_max


def test_fixed_step_and_zero_gradient() -> None:
    grad, scores, _ = random_problem(5, 4, 1.0, 0)
    step = ShermanMorrison(damping=0.5, fisher="batch", step_size=0.3).compute(grad, scores)
    assert step.step_size == 0.3
    expected = np.linalg.solve(dense_batch_fisher(scores, 0.5), grad.numpy())
    np.testing.assert_allclose(step.update().numpy(), 0.3 * expected, rtol=1e-10)

    zero = torch.zeros(5, dtype=torch.float64)
    step = ShermanMorrison(damping=0.5, fisher="mean", step_size=0.3, max_kl=0.01).compute(zero, scores[0])
    assert not step.skipped and step.step_size == 0.3
    assert step.stats["fisher_alignment"] == 0.0 and step.stats["gFg"] == 0.0
    assert torch.count_nonzero(step.direction) == 0


def test_trust_region_step_size_edge_cases() -> None:
    assert trust_region_step_size(0.0, 0.01, 1.5) == 1.5
    assert trust_region_step_size(-1e-18, 0.01, 1.5) == 1.5
    assert trust_region_step_size(8.0, 1.0, 1.5) == pytest.approx(0.5)
    assert trust_region_step_size(8.0, None, 1.5) == 1.5
    with pytest.raises(ValueError, match="quadratic"):
        trust_region_step_size(float("nan"), 0.01, 1.0)


# --------------------------------------------------------------------------------------------------------------
# The trap of notes §4.2: the batch-mean score averages to ~0
# --------------------------------------------------------------------------------------------------------------


def softmax_policy_batch(m: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear softmax policy, actions sampled from it; returns (g, mean score, per-sample scores) in float64."""
    n_features, n_actions = 6, 4
    theta = torch.randn(n_actions, n_features, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    reward_w = torch.randn(n_actions, n_features, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    feature_scale = torch.tensor([3.0, 1.0, 1.0, 0.3, 0.3, 0.1], dtype=torch.float64)  # an ill-conditioned Fisher
    x = torch.randn(m, n_features, generator=gen, dtype=torch.float64) * feature_scale
    probs = torch.softmax(x @ theta.T, dim=-1)
    actions = torch.multinomial(probs, 1, generator=gen).squeeze(1)
    # score of a linear softmax policy: (onehot(a) - p) outer x
    scores = ((nn.functional.one_hot(actions, n_actions) - probs)[:, :, None] * x[:, None, :]).reshape(m, -1)
    rewards = (x @ reward_w.T)[torch.arange(m), actions]
    advantages = rewards - rewards.mean()
    return scores.T @ advantages / m, scores.mean(dim=0), scores


def test_mean_mode_degenerates_to_scaled_sgd_for_large_batches() -> None:
    """
    With psi = batch-mean score, |psi| ~ 1/sqrt(M) and the "mean" direction tends to g / lambda (cos -> 1, norm
    ratio -> 1, deviation ~ 1/(M lambda)): SMAC's batch-mean variant becomes SGD with learning rate
    alpha / lambda. The exact batch empirical Fisher (dense reference) keeps a real curvature correction.
    Averages over several batches per size, since the rank-1 correction of one batch depends on how g and psi align.
    """
    damping = 0.01
    gen = torch.Generator().manual_seed(0)
    one_minus_cos, one_minus_ratio, scaled_psi_norm = {}, {}, {}
    cos_exact = 1.0
    for m, repeats in ((4, 40), (64, 40), (1024, 10), (32768, 2)):
        stats = []
        for _ in range(repeats):
            g, psi, scores = softmax_policy_batch(m, gen)
            direction = sherman_morrison_direction(g, psi, damping)
            cos = float(direction @ g / (direction.norm() * g.norm()))
            ratio = float(direction.norm() * damping / g.norm())
            stats.append((1 - cos, 1 - ratio, float(psi.norm()) * math.sqrt(m)))
        one_minus_cos[m], one_minus_ratio[m], scaled_psi_norm[m] = np.mean(stats, axis=0)
        if m == 32768:
            s = scores.numpy()
            exact = np.linalg.solve(damping * np.eye(s.shape[1]) + s.T @ s / m, g.numpy())
            cos_exact = float(exact @ g.numpy() / (np.linalg.norm(exact) * g.norm()))

    sizes = sorted(one_minus_cos)
    # |psi| sqrt(M) stays O(1): the mean score vanishes like 1/sqrt(M)
    assert all(0.1 < scaled_psi_norm[m] < 10 for m in sizes)
    # the rank-1 correction shrinks monotonically with the batch size ...
    assert all(one_minus_cos[a] > one_minus_cos[b] for a, b in itertools.pairwise(sizes))
    assert all(one_minus_ratio[a] > one_minus_ratio[b] for a, b in itertools.pairwise(sizes))
    # ... from a real correction for tiny batches to plain g / lambda for large ones
    assert one_minus_cos[4] > 0.05 and one_minus_ratio[4] > 0.05
    assert one_minus_cos[32768] < 1e-4 and one_minus_ratio[32768] < 1e-2
    # the exact batch empirical Fisher does not degenerate
    assert cos_exact < 0.95


# --------------------------------------------------------------------------------------------------------------
# Validation, non-finite inputs, state
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"damping": 0.0}, "damping"),
        ({"damping": -0.1}, "damping"),
        ({"damping": float("nan")}, "damping"),
        ({"damping": float("inf")}, "damping"),
        ({"damping": True}, "damping"),
        ({"fisher": "diag"}, "fisher"),
        ({"step_size": 0.0}, "step_size"),
        ({"step_size": -1.0}, "step_size"),
        ({"max_kl": 0.0}, "max_kl"),
        ({"max_kl": float("nan")}, "max_kl"),
        ({"nonfinite": "ignore"}, "nonfinite"),
    ],
)
def test_bad_constructor_arguments_raise_naming_the_argument(kwargs: dict, name: str) -> None:
    value = next(iter(kwargs.values()))
    with pytest.raises(ValueError, match=name) as info:
        ShermanMorrison(**kwargs)
    assert repr(value) in str(info.value)


@pytest.mark.bad_input
def test_bad_damping_assignment_and_functional_arguments() -> None:
    sm = ShermanMorrison()
    with pytest.raises(ValueError, match="damping=-1"):
        sm.damping = -1.0
    grad, scores, coefficients = random_problem(4, 3, 1.0, 0)
    with pytest.raises(ValueError, match="damping=0"):
        sherman_morrison_direction(grad, scores[0], 0)
    with pytest.raises(ValueError, match="damping"):
        woodbury_direction(grad, scores, -2.0)
    with pytest.raises(ValueError, match="damping"):
        woodfisher_factors(scores, float("nan"))
    with pytest.raises(ValueError, match="damping"):
        kernel_weights(score_gram(scores), coefficients, 0.0)


@pytest.mark.bad_input
def test_mismatched_shapes_raise_naming_the_argument() -> None:
    grad, scores, coefficients = random_problem(4, 3, 1.0, 0)
    for fisher in ("mean", "sample", "batch"):
        sm = ShermanMorrison(fisher=fisher)
        with pytest.raises(ValueError, match="scores"):
            sm.compute(grad, scores[:, :3])
        with pytest.raises(ValueError, match="grad"):
            sm.compute(grad[None], scores)
    with pytest.raises(ValueError, match="scores"):
        ShermanMorrison(fisher="batch").compute(grad, scores[0])  # needs [M, d]
    with pytest.raises(ValueError, match="score"):
        sherman_morrison_direction(grad, scores[0, :3], 0.1)
    with pytest.raises(ValueError, match="scores"):
        woodbury_direction(grad, scores.T, 0.1)
    with pytest.raises(ValueError, match="gram"):
        kernel_weights(torch.eye(4, dtype=torch.float64), coefficients, 0.1)
    with pytest.raises(ValueError, match="gram"):
        ShermanMorrison(fisher="batch").compute_kernel(torch.eye(2, dtype=torch.float64), coefficients)
    with pytest.raises(ValueError, match="fisher"):
        ShermanMorrison(fisher="mean").compute_kernel(score_gram(scores), coefficients)
    with pytest.raises(ValueError, match="extra_scores"):
        layer = nn.Linear(2, 1).double()
        with LinearGramRecorder(layer) as recorder:
            out = layer(torch.randn(3, 2, dtype=torch.float64))
        recorder.gram(out.squeeze(1), extra_scores=torch.zeros(2, 1, dtype=torch.float64))


@pytest.mark.bad_input
@pytest.mark.parametrize("fisher", ["mean", "sample", "batch"])
def test_nonfinite_inputs_skip_or_raise(fisher: str) -> None:
    grad, scores, coefficients = random_problem(4, 3, 1.0, 0)
    bad_grad = grad.clone()
    bad_grad[1] = float("nan")
    bad_scores = scores.clone()
    bad_scores[0, 0] = float("inf")

    sm = ShermanMorrison(fisher=fisher, max_kl=0.01)
    for g, s, name in ((bad_grad, scores, "grad"), (grad, bad_scores, "scores")):
        step = sm.compute(g, s)
        assert step.skipped and name in step.reason
        assert step.step_size == 0.0 and torch.count_nonzero(step.update()) == 0
    assert sm.num_skipped == 2 and sm.num_steps == 0
    assert not sm.compute(grad, scores).skipped and sm.num_steps == 1

    strict = ShermanMorrison(fisher=fisher, nonfinite="raise")
    with pytest.raises(ValueError, match="grad"):
        strict.compute(bad_grad, scores)
    with pytest.raises(ValueError, match="scores"):
        strict.compute(grad, bad_scores)

    if fisher == "batch":
        bad_coef = coefficients.clone()
        bad_coef[2] = float("nan")
        step = sm.compute_kernel(score_gram(scores), bad_coef)
        assert step.skipped and "coefficients" in step.reason and step.direction is None
        with pytest.raises(ValueError, match="coefficients"):
            strict.compute_kernel(score_gram(scores), bad_coef)


@pytest.mark.bad_input
def test_overflowing_result_is_skipped() -> None:
    grad = torch.full((3,), 1e30, dtype=torch.float32)
    scores = torch.zeros(1, 3, dtype=torch.float32)
    step = ShermanMorrison(damping=1e-12, fisher="mean").compute(grad, scores)
    assert step.skipped and "not finite" in step.reason


def test_state_dict_round_trip() -> None:
    grad, scores, _ = random_problem(4, 3, 1.0, 0)
    sm = ShermanMorrison(fisher="sample")
    sm.compute(grad, scores)
    sm.compute(torch.full_like(grad, float("nan")), scores)
    state = sm.state_dict()
    assert state == {"num_steps": 1, "num_skipped": 1}
    restored = ShermanMorrison(fisher="sample")
    restored.load_state_dict(state)
    assert restored.state_dict() == state
    with pytest.raises(ValueError, match="num_skipped"):
        restored.load_state_dict({"num_steps": 3})
