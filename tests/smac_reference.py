"""
Dense float64 references for SMAC's actor step (the counterpart of ``kfac_reference.py``): the log-probabilities,
entropies and KL of a small MLP policy written out by hand, and the damped empirical-Fisher natural-gradient step
computed with explicit ``d x d`` matrices.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch as th

from sb3_natgrad.smac import SMAC


def actor_param_names(model: SMAC) -> list[str]:
    ids = {id(p) for p in model._actor_params}
    return [name for name, p in model.policy.named_parameters() if id(p) in ids]


# --------------------------------------------------------------------------------------------------------------
# The actor step against a dense float64 natural gradient
# --------------------------------------------------------------------------------------------------------------


def reference_log_prob(params: dict[str, th.Tensor], obs: th.Tensor, actions: th.Tensor, discrete: bool) -> th.Tensor:
    """Hand-written float64 forward of ``MlpPolicy(net_arch=[8])``: tanh hidden layer, categorical or Gaussian head."""
    hidden = th.tanh(obs @ params["mlp_extractor.policy_net.0.weight"].T + params["mlp_extractor.policy_net.0.bias"])
    out = hidden @ params["action_net.weight"].T + params["action_net.bias"]
    if discrete:
        return th.log_softmax(out, dim=-1).gather(-1, actions.long().view(-1, 1)).squeeze(-1)
    log_std = params["log_std"]
    z = (actions - out) / th.exp(log_std)
    return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def reference_entropy(params: dict[str, th.Tensor], obs: th.Tensor, discrete: bool) -> th.Tensor:
    hidden = th.tanh(obs @ params["mlp_extractor.policy_net.0.weight"].T + params["mlp_extractor.policy_net.0.bias"])
    out = hidden @ params["action_net.weight"].T + params["action_net.bias"]
    if discrete:
        log_p = th.log_softmax(out, dim=-1)
        return -(log_p.exp() * log_p).sum(-1)
    log_std = params["log_std"]
    return (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum() * th.ones(obs.shape[0], dtype=obs.dtype)


def reference_kl(old: dict[str, th.Tensor], new: dict[str, th.Tensor], obs: th.Tensor, discrete: bool) -> float:
    def head(params):
        hidden = th.tanh(obs @ params["mlp_extractor.policy_net.0.weight"].T + params["mlp_extractor.policy_net.0.bias"])
        return hidden @ params["action_net.weight"].T + params["action_net.bias"]

    if discrete:
        lp_old, lp_new = th.log_softmax(head(old), -1), th.log_softmax(head(new), -1)
        return float((lp_old.exp() * (lp_old - lp_new)).sum(-1).mean())
    mu_old, mu_new = head(old), head(new)
    ls_old, ls_new = old["log_std"], new["log_std"]
    kl = ls_new - ls_old + (th.exp(2 * ls_old) + (mu_old - mu_new) ** 2) / (2 * th.exp(2 * ls_new)) - 0.5
    return float(kl.sum(-1).mean())


def dense_reference_step(model: SMAC, snap: dict[str, Any], discrete: bool) -> tuple[dict[str, th.Tensor], dict[str, float]]:
    """The SMAC actor step computed densely in float64 from the snapshot taken before ``train()``."""
    names = actor_param_names(model)
    params = {n: snap["params"][n].double().clone().requires_grad_(True) for n in names}
    num = snap["advantages"].size
    # Replay the permutation of RolloutBuffer.get (numpy) and the Fisher subset draw (torch).
    np.random.set_state(snap["np_state"])
    order = np.random.permutation(num)
    th.set_rng_state(snap["torch_state"])
    subset = None
    if model.fisher_samples is not None and model.fisher_samples < num:
        subset = th.randperm(num)[: model.fisher_samples].numpy()

    obs = th.as_tensor(snap["observations"].reshape(num, -1)[order], dtype=th.float64)
    actions = th.as_tensor(snap["actions"].reshape(num, -1)[order], dtype=th.float64)
    adv = th.as_tensor(snap["advantages"].reshape(num)[order], dtype=th.float64)
    if model.normalize_advantage:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)

    flat = list(params.values())
    log_prob = reference_log_prob(params, obs, actions, discrete)
    objective = (adv * log_prob).mean() + model.ent_coef * reference_entropy(params, obs, discrete).mean()
    grad = th.cat([g.reshape(-1) for g in th.autograd.grad(objective, flat, retain_graph=True)]).numpy()
    scores = np.stack(
        [th.cat([g.reshape(-1) for g in th.autograd.grad(log_prob[i], flat, retain_graph=True)]).numpy() for i in range(num)]
    )
    if subset is not None:
        scores = scores[subset]
    dim = grad.shape[0]
    lam = model.damping
    if model.fisher == "mean":
        psi = scores.mean(axis=0)
        fisher = lam * np.eye(dim) + np.outer(psi, psi)
    else:
        fisher = lam * np.eye(dim) + scores.T @ scores / scores.shape[0]
    direction = np.linalg.solve(fisher, grad)
    g_f_g = float(grad @ direction)
    alpha = model.actor_step_size
    if model.max_kl is not None:
        alpha = min(alpha, math.sqrt(2 * model.max_kl / g_f_g))
    new = {}
    offset = 0
    for n, p in params.items():
        new[n] = (p.detach() + alpha * th.as_tensor(direction[offset : offset + p.numel()]).view_as(p)).detach()
        offset += p.numel()
    stats = {
        "step_size": alpha,
        "natural_grad_norm": float(np.linalg.norm(direction)),
        "fisher_alignment": g_f_g / float(np.linalg.norm(grad) * np.linalg.norm(direction)),
        "fisher_correction": float(np.linalg.norm(lam * direction - grad) / np.linalg.norm(grad)),
        "kl": reference_kl({n: p.detach() for n, p in params.items()}, new, obs, discrete),
    }
    return new, stats
