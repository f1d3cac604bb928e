"""
Wall-clock cost of one K-FAC update against one SGD / RMSprop update on the same network and batch.

An "update" is what an actor-critic algorithm does once per rollout: a training-mode forward of the
policy, (K-FAC only) the sampled-Fisher pass that records the factors, the backward of the loss and
the optimizer step. Times are amortised over ``--updates`` updates, so an inverse interval ``Tf``
costs one decomposition per ``Tf`` updates. All numbers come from the same process and run.

    python benchmarks/kfac_overhead.py                      # NatureCNN at batch 80 and 640, 64-64 MLP
    python benchmarks/kfac_overhead.py --nets mlp --batch-sizes 64 2048
    python benchmarks/kfac_overhead.py --nets cnn --batch-sizes 640 --methods eigen --inverse-intervals 10 \
        --stats-dtypes float32 bfloat16
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy

from sb3_natgrad.optim import KFAC


def make_policy(net: str) -> tuple[torch.nn.Module, spaces.Space]:
    if net == "cnn":
        obs_space = spaces.Box(0, 255, (4, 84, 84), dtype=np.uint8)
        policy = ActorCriticCnnPolicy(obs_space, spaces.Discrete(6), lambda _: 0.0)
    else:
        obs_space = spaces.Box(-1, 1, (8,), dtype=np.float32)
        policy = ActorCriticPolicy(obs_space, spaces.Discrete(4), lambda _: 0.0)
    return policy, obs_space


def one_update(policy, optimizer, obs, actions, returns, kfac: bool) -> None:
    values, log_prob, entropy = policy.evaluate_actions(obs, actions)
    if kfac and optimizer.stats_due:
        sampled = policy.action_dist.distribution
        fisher = sampled.log_prob(sampled.sample()).mean()
        noise = torch.randn_like(values)
        fisher = fisher - 0.5 * ((values - (values.detach() + noise)) ** 2).mean()
        optimizer.record_fisher(fisher)
    loss = -(returns * log_prob).mean() + 0.5 * ((returns - values.flatten()) ** 2).mean() - 0.01 * entropy.mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def time_updates(net: str, batch: int, make_opt, kfac: bool, updates: int) -> float:
    torch.manual_seed(0)
    policy, obs_space = make_policy(net)
    policy.set_training_mode(True)
    optimizer = make_opt(policy)
    obs = torch.as_tensor(np.stack([obs_space.sample() for _ in range(batch)])).float()
    actions = torch.randint(0, policy.action_space.n, (batch,))
    returns = torch.randn(batch)
    one_update(policy, optimizer, obs, actions, returns, kfac)  # warm-up (first inverse)
    start = time.perf_counter()
    for _ in range(updates):
        one_update(policy, optimizer, obs, actions, returns, kfac)
    if kfac:
        optimizer.wait_for_inverses()
    return (time.perf_counter() - start) / updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", nargs="+", default=["cnn", "mlp"], choices=["cnn", "mlp"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=None)
    parser.add_argument("--inverse-intervals", nargs="+", type=int, default=[1, 10, 50])
    parser.add_argument("--stats-intervals", nargs="+", type=int, default=[1])
    parser.add_argument("--stats-batch-size", type=int, default=None)
    parser.add_argument("--stats-dtypes", nargs="+", default=["float32"], help="dtypes of the factor products to compare")
    parser.add_argument("--methods", nargs="+", default=["eigen", "cholesky"], choices=["eigen", "cholesky"])
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.updates} updates per measurement")
    for net in args.nets:
        batches = args.batch_sizes or ([80, 640] if net == "cnn" else [64, 640])
        for batch in batches:
            sgd = time_updates(net, batch, lambda p: torch.optim.SGD(p.parameters(), lr=1e-3), False, args.updates)
            rms = time_updates(
                net,
                batch,
                lambda p: torch.optim.RMSprop(p.parameters(), lr=7e-4, alpha=0.99, eps=1e-5),
                False,
                args.updates,
            )
            print(f"\n{net} batch {batch}: SGD {sgd * 1e3:.1f} ms, RMSprop {rms * 1e3:.1f} ms per update")
            print(f"{'method':>9} {'stats dtype':>11} {'Ts':>3} {'Tf':>4} {'ms/update':>10} {'/SGD':>6} {'/RMSprop':>9}")
            for method in args.methods:
                for dtype in args.stats_dtypes:
                    for stats_interval in args.stats_intervals:
                        for interval in args.inverse_intervals:

                            def make(p, method=method, interval=interval, stats_interval=stats_interval, dtype=dtype):
                                return KFAC(
                                    p,
                                    lr=0.25,
                                    inverse_method=method,
                                    inverse_interval=interval,
                                    stats_interval=stats_interval,
                                    stats_batch_size=args.stats_batch_size,
                                    stats_dtype=dtype,
                                )

                            t = time_updates(net, batch, make, True, args.updates)
                            print(
                                f"{method:>9} {dtype:>11} {stats_interval:>3} {interval:>4} {t * 1e3:>10.1f} {t / sgd:>6.2f}"
                                f" {t / rms:>9.2f}"
                            )


if __name__ == "__main__":
    main()
