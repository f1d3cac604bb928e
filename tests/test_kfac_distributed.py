"""KFAC's sample mask and its statistics reducer (data parallelism), against one process on the whole batch."""

from __future__ import annotations

import os
import pathlib

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from sb3_natgrad.optim import KFAC, all_reduce_sum

WORLD = 2
BATCH = 8
STEPS = 4


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, kernel_size=3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4)
    ).double()


def batches() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Inputs, Gumbel noise (the sampled Fisher actions) and regression targets, the same in every process."""
    gen = torch.Generator().manual_seed(3)
    out = []
    for _ in range(STEPS):
        x = torch.randn(BATCH, 2, 8, 8, dtype=torch.float64, generator=gen)
        u = torch.rand(BATCH, 4, dtype=torch.float64, generator=gen).clamp(1e-9, 1 - 1e-9)
        y = torch.randint(0, 4, (BATCH,), generator=gen)
        out.append((x, -torch.log(-torch.log(u)), y))
    return out


def sampled_fisher_loss(logits: torch.Tensor, gumbel: torch.Tensor) -> torch.Tensor:
    """Per-sample ``log p(a~|x)`` with ``a~`` drawn by the Gumbel-max trick from the given noise."""
    actions = (logits.detach() + gumbel).argmax(-1)
    return torch.log_softmax(logits, -1).gather(1, actions[:, None]).squeeze(1)


def make_kfac(model: nn.Module, conv_factors: str, **kwargs) -> KFAC:
    return KFAC(model, lr=0.3, kl_clip=1e-2, inverse_interval=2, warmup_steps=1, conv_factors=conv_factors, **kwargs)


@pytest.mark.parametrize("conv_factors", ["expand", "reduce"])
def test_sample_mask_equals_dropping_the_masked_rows(conv_factors):
    mask = torch.tensor([True, False, True, True, False, True, True, False])
    full, kept = small_cnn(), small_cnn()
    opt_full, opt_kept = make_kfac(full, conv_factors), make_kfac(kept, conv_factors)
    for x, gumbel, y in batches():
        logits = full(x)
        opt_full.record_fisher(sampled_fisher_loss(logits, gumbel)[mask].mean(), sample_mask=mask)
        opt_full.zero_grad()
        nn.functional.cross_entropy(logits[mask], y[mask]).backward()
        opt_full.step()

        logits = kept(x[mask])
        opt_kept.record_fisher(sampled_fisher_loss(logits, gumbel[mask]).mean())
        opt_kept.zero_grad()
        nn.functional.cross_entropy(logits, y[mask]).backward()
        opt_kept.step()
    for layer_full, layer_kept in zip(opt_full.layers, opt_kept.layers):
        torch.testing.assert_close(layer_full.curvature.factor_a, layer_kept.curvature.factor_a, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(layer_full.curvature.factor_g, layer_kept.curvature.factor_g, rtol=1e-12, atol=1e-12)
    for p_full, p_kept in zip(full.parameters(), kept.parameters()):
        torch.testing.assert_close(p_full, p_kept, rtol=1e-10, atol=1e-12)


@pytest.mark.bad_input
def test_sample_mask_of_the_wrong_length_or_type_is_refused():
    model = small_cnn()
    opt = make_kfac(model, "expand")
    x, gumbel, _ = batches()[0]
    logits = model(x)
    with pytest.raises(ValueError, match="sample_mask has 5 entries but layer '0' was called on a batch of shape"):
        opt.record_fisher(sampled_fisher_loss(logits, gumbel).mean(), sample_mask=torch.ones(5, dtype=torch.bool))
    assert all(layer.a_sum is None and layer.g_sum is None for layer in opt.layers)  # no partial statistics left
    logits = model(x)
    with pytest.raises(ValueError, match=r"sample_mask must be a 1-D boolean tensor, got a torch\.float32 tensor"):
        opt.record_fisher(sampled_fisher_loss(logits, gumbel).mean(), sample_mask=torch.ones(BATCH))


@pytest.mark.bad_input
def test_reducer_outside_torch_distributed_says_so():
    model = small_cnn()
    opt = make_kfac(model, "expand", statistics_reducer=all_reduce_sum())
    x, gumbel, y = batches()[0]
    logits = model(x)
    opt.record_fisher(sampled_fisher_loss(logits, gumbel).mean())
    opt.zero_grad()
    nn.functional.cross_entropy(logits, y).backward()
    with pytest.raises(RuntimeError, match=r"torch\.distributed is not initialised"):
        opt.step()
    with pytest.raises(TypeError, match="statistics_reducer must be callable, got int"):
        make_kfac(model, "expand", statistics_reducer=3)
    with pytest.raises(ValueError, match="async_inverse=True with a statistics_reducer"):
        make_kfac(model, "expand", statistics_reducer=all_reduce_sum(), async_inverse=True)


def train(model: nn.Module, opt: KFAC, shard: slice, world: int) -> None:
    """STEPS updates on this process's shard of each batch; the gradients are averaged over the processes."""
    for x, gumbel, y in batches():
        logits = model(x[shard])
        opt.record_fisher(sampled_fisher_loss(logits, gumbel[shard]).mean())
        opt.zero_grad()
        nn.functional.cross_entropy(logits, y[shard]).backward()
        if world > 1:
            for p in model.parameters():
                dist.all_reduce(p.grad)
                p.grad /= world
        opt.step()


def _worker(rank: int, conv_factors: str, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        model = small_cnn()
        opt = make_kfac(model, conv_factors, statistics_reducer=all_reduce_sum())
        per = BATCH // WORLD
        train(model, opt, slice(rank * per, (rank + 1) * per), WORLD)
        torch.save(
            {
                "params": [p.detach() for p in model.parameters()],
                "factors": [(layer.curvature.factor_a, layer.curvature.factor_g) for layer in opt.layers],
            },
            os.path.join(out, f"{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("conv_factors", ["expand", "reduce"])
def test_two_processes_with_the_reducer_equal_one_process_on_the_whole_batch(conv_factors, tmp_path: pathlib.Path):
    init_file = tmp_path / "rendezvous"
    mp.start_processes(_worker, args=(conv_factors, str(init_file), str(tmp_path)), nprocs=WORLD, start_method="spawn")
    ranks = [torch.load(tmp_path / f"{rank}.pt", weights_only=True) for rank in range(WORLD)]

    model = small_cnn()
    opt = make_kfac(model, conv_factors)
    train(model, opt, slice(None), 1)

    # every process holds bit-identical factors and parameters
    for a, b in zip(ranks[0]["params"], ranks[1]["params"]):
        assert torch.equal(a, b)
    for (a0, g0), (a1, g1) in zip(ranks[0]["factors"], ranks[1]["factors"]):
        assert torch.equal(a0, a1) and torch.equal(g0, g1)
    # and they equal one process trained on the whole batch
    for layer, (factor_a, factor_g) in zip(opt.layers, ranks[0]["factors"]):
        torch.testing.assert_close(factor_a, layer.curvature.factor_a, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(factor_g, layer.curvature.factor_g, rtol=1e-10, atol=1e-12)
    for distributed, single in zip(ranks[0]["params"], model.parameters()):
        torch.testing.assert_close(distributed, single.detach(), rtol=1e-9, atol=1e-11)
