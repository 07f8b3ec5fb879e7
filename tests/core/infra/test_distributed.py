"""Data-parallel training (torch.distributed, gloo on CPU): sharding, gradient averaging, rank-0-only writes,
resume, and 2 processes with B/2 rows each against 1 process with the batch B.

The multi-process checks share one launch of 2 workers through :func:`easytune.core.infra.distributed.launch_local`
(torch's elastic launcher, c10d rendezvous on 127.0.0.1), which runs every scenario of
:func:`tests.core.infra.distributed_workers.scenarios`; the references run in the test process.

Tolerance: 2 x (B/2) and 1 x B compute the same sums in a different order (smaller matrix products, the all-reduce),
so the averaged gradients agree to float32 rounding (relative 1e-6) and the weights after 3-8 AdamW updates to
max |difference| <= 5e-6 (measured 6e-8 to 9e-7) while the runs move them by 5e-4 or more; the attention key biases
are left out of the comparison (their exact gradient is 0, see :func:`_without_key_biases`).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from easytune.core.infra import distributed
from easytune.core.infra.distributed import DistContext, Shard, draw_rows, shard_of
from easytune.core.pretrain.loop import MotionBatches
from tests.core.finetune.tiny import make_mld, make_splits
from tests.core.infra import distributed_workers as w

ATOL = 5e-6


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _without_key_biases(weights: dict) -> dict:
    """The weights less the attention key biases: their exact gradient is 0 (softmax ignores a constant added to
    every logit of a row), so the gradient both runs see is rounding noise, which AdamW normalises into steps of
    +-lr in either direction; every other element must agree."""
    out = {}
    for name, value in weights.items():
        if name.endswith(".kv.bias"):  # keys then values (layers.Attention)
            value = value[value.shape[0] // 2:]
        elif name.endswith("in_proj_bias"):  # queries, keys, values (nn.MultiheadAttention)
            third = value.shape[0] // 3
            value = torch.cat([value[:third], value[2 * third:]])
        out[name] = value
    return out


# ------------------------------------------------------------------------------------------------ one process
def test_shards_are_contiguous_equal_and_cover_the_batch():
    shards = [shard_of(8, DistContext(rank=r, world_size=4)) for r in range(4)]
    assert [(s.start, s.stop, s.total) for s in shards] == [(0, 2, 8), (2, 4, 8), (4, 6, 8), (6, 8, 8)]
    assert shard_of(8, DistContext()) is None  # one process: nothing to split
    with pytest.raises(ValueError, match=r"finetune batch_size \(6\) must be a multiple of the number of processes "
                                         r"\(4\)"):
        shard_of(6, DistContext(rank=1, world_size=4), what="finetune batch_size")


def test_sharded_draws_are_the_single_process_draw():
    def draw(n):
        return torch.randn(n, 3, generator=torch.Generator().manual_seed(11))

    full = draw_rows(draw, 6, None)
    parts = [draw_rows(draw, 2, Shard(2 * r, 2 * r + 2, 6)) for r in range(3)]
    torch.testing.assert_close(torch.cat(parts), full, rtol=0, atol=0)
    with pytest.raises(ValueError, match="shard of 2 rows for a local batch of 3"):
        draw_rows(draw, 3, Shard(0, 2, 6))


def test_collectives_are_no_ops_without_a_process_group():
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    assert distributed.average_gradients([p], [torch.tensor(1.5), 2]) == [1.5, 2.0]
    assert p.grad.tolist() == [2.0, 2.0, 2.0]
    x = torch.randn(2, 3, requires_grad=True)
    assert distributed.gather_rows(x) is x
    assert distributed.broadcast_object({"a": 1}) == {"a": 1} and distributed.gather_objects(5) == [5]
    assert distributed.any_true(True) and not distributed.any_true(False)
    assert distributed.context() == DistContext() and distributed.is_main()
    assert distributed.rank_seed(7, 3) == 7  # one process: the plain seed
    assert distributed.rank_seed(7, 3, ctx=DistContext(0, 2)) != distributed.rank_seed(7, 3, ctx=DistContext(1, 2))


def test_motion_batches_shards_are_the_rows_of_the_global_batch():
    train, _, text = make_splits(10)
    full = list(MotionBatches(train, text, 4, 12, seed=2)(0))
    ranks = [list(MotionBatches(train, text, 4, 12, seed=2, shard=DistContext(r, 2))(0)) for r in range(2)]
    assert len(full) == len(ranks[0]) == len(ranks[1]) == 2
    for b, batch in enumerate(full):
        for name in ("features", "mask", "lengths"):
            joined = torch.cat([getattr(ranks[r][b], name) for r in range(2)])
            torch.testing.assert_close(joined, getattr(batch, name), rtol=0, atol=0)  # global padding kept
        torch.testing.assert_close(torch.cat([ranks[r][b].text.tokens for r in range(2)]), batch.text.tokens)
        assert np.concatenate([ranks[r][b].index for r in range(2)]).tolist() == batch.index.tolist()
        assert ranks[1][b].shard == Shard(2, 4, 4) and batch.shard is None
    with pytest.raises(ValueError, match=r"batch_size \(4\) must be a multiple of the number of processes \(3\)"):
        next(MotionBatches(train, text, 4, 12, seed=2, shard=DistContext(0, 3))(0))


@pytest.mark.parametrize("kind", ["mld", "mdm"])
def test_denoiser_loss_of_shards_draws_the_global_noise(kind, one_torch_thread):
    """The ranks' losses with the same RNG state average to the global batch's loss (MLD: a mean over equal latent
    shapes, exact); MDM's masked mean is a mean of per-rank means (checked: the noise is the same, so the two
    shards' losses recombine with their valid-frame weights)."""
    from tests.core.finetune.tiny import make_mdm

    gen = make_mld(steps=4) if kind == "mld" else make_mdm(steps=4)
    train, _, text = make_splits(10)
    batch = next(MotionBatches(train, text, 4, 12, seed=2)(0))
    shards = [next(MotionBatches(train, text, 4, 12, seed=2, shard=DistContext(r, 2))(0)) for r in range(2)]
    gen.denoiser.eval()  # no dropout

    def loss(b, shard=None):
        return gen.training_loss(b.features, b.mask, b.text, generator=torch.Generator().manual_seed(4),
                                 shard=shard)

    full = loss(batch)
    parts = [loss(s, s.shard) for s in shards]
    if kind == "mld":
        torch.testing.assert_close((parts[0] + parts[1]) / 2, full, rtol=1e-6, atol=1e-7)
    else:
        frames = [float(s.mask.sum()) for s in shards]
        torch.testing.assert_close((parts[0] * frames[0] + parts[1] * frames[1]) / sum(frames), full, rtol=1e-6,
                                   atol=1e-7)


def test_bf16_option_is_a_no_op_on_cpu(one_torch_thread):
    plain, bf16 = w.finetune_run(max_updates=4), w.finetune_run(max_updates=4, bf16=True)
    assert _max_diff(plain["weights"], bf16["weights"]) == 0.0


def test_nproc_option():
    assert distributed.resolve_nproc(2, "cpu") == 2 and distributed.resolve_nproc("auto", "cpu") == 1
    with pytest.raises(ValueError, match="nproc_per_node must be an integer >= 1 or 'auto'"):
        distributed.resolve_nproc(0, "cpu")


# ------------------------------------------------------------------------------------------------ two processes
@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    torch_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        result = distributed.launch_local(w.scenarios, (str(folder),), nproc=2, device="cpu")
        reference = {"easytune": w.finetune_run("easytune_step", "mld"), "draft_k": w.finetune_run("draft_k", "mdm"),
                     "pretrain": w.pretrain_run(), "reward": w.reward_run()}
    finally:
        torch.set_num_threads(torch_threads)
    return result, reference, folder


@pytest.mark.slow
def test_launch_runs_two_ranks_of_one_group(two_ranks):
    result, _, _ = two_ranks
    assert result["context"] == DistContext(rank=0, world_size=2, local_rank=0, initialized=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["easytune", "draft_k", "pretrain", "reward"])
def test_two_processes_with_half_batches_reach_the_single_process_weights(two_ranks, name):
    result, reference, _ = two_ranks
    diff = _max_diff(*(_without_key_biases(r[name]["weights"]) for r in (result, reference)))
    moved = _max_diff(reference[name]["weights"], _initial_weights(name))
    print(f"{name}: max |2 x B/2 - 1 x B| = {diff:.2e}; max weight change {moved:.2e}")
    assert diff <= ATOL and moved >= 100 * ATOL


def _initial_weights(name: str) -> dict:
    if name == "reward":
        return w._weights(w.make_reward().model)
    if name == "pretrain":
        gen, _ = _untrained_pretrain()
        return w._weights(gen.denoiser)
    return w._weights((w.make_mld(steps=4) if name == "easytune" else w.make_mdm(steps=4)).denoiser)


def _untrained_pretrain():
    from easytune.core.infra.config import from_dict
    from easytune.core.pretrain.base_generators import PretrainConfig, build_generator

    config = from_dict(PretrainConfig, {"latent_denoiser": {"model": {"preset": "tiny", "text_dim": 8, "latent_dim": 8,
                                                                      "dropout": 0.0}}})
    torch.manual_seed(5)  # train_denoiser seeds the initial weights with its seed
    return build_generator("mld", config, 6, make_mld().vae), config


@pytest.mark.slow
def test_summary_has_per_rank_memory_and_throughput(two_ranks):
    result, reference, _ = two_ranks
    summary, history = result["easytune"]["summary"], result["easytune"]["history"]
    assert summary["world_size"] == 2 and len(summary["peak_saved_bytes_per_rank"]) == 2
    assert all(v > 0 for v in summary["peak_saved_bytes_per_rank"]) and summary["peak_cuda_bytes_per_rank"] == [
        None, None]
    assert summary["samples_drawn"] == reference["easytune"]["summary"]["samples_drawn"] == 8  # 2 trajectories x 4
    assert summary["samples_per_s"] > 0 and history["samples_per_s"][-1]["step"] == 8
    assert {"peak_saved_bytes_rank0", "peak_saved_bytes_rank1"} <= set(history)
    # the cost counters are global: every sample's denoiser passes, as one process counts them
    assert summary["denoiser_samples_grad"] == reference["easytune"]["summary"]["denoiser_samples_grad"]
    assert summary["updates"] == 8 and reference["easytune"]["summary"]["world_size"] == 1
    # the logged training reward is the ranks' mean = the global batch's mean
    np.testing.assert_allclose([r["value"] for r in history["train_reward"]],
                               [r["value"] for r in reference["easytune"]["history"]["train_reward"]], atol=1e-5)


@pytest.mark.slow
def test_rank_zero_alone_writes_the_resume_checkpoints(two_ranks):
    result, _, folder = two_ranks
    rank0, rank1 = result["writes_per_rank"]
    assert rank1 == [] and len(rank0) > 10
    assert {p.rsplit("/", 1)[-1] for p in rank0} == {"latent_denoiser.pt", "full.pt", "part.pt"}
    assert not list(folder.rglob("*.tmp"))


@pytest.mark.slow
def test_a_distributed_run_resumes(two_ranks, tmp_path, one_torch_thread):
    """Interrupted at update 4 and resumed with 2 processes: the weights of the uninterrupted 2-process run; the
    same file resumed by 1 process (rank 0's state is every rank's): the 1-process weights."""
    result, reference, folder = two_ranks
    assert result["interrupted"]["summary"]["interrupted"] and result["interrupted"]["summary"]["updates"] == 4
    assert _max_diff(result["resumed"]["weights"], result["uninterrupted"]["weights"]) == 0.0
    part = folder / "part.pt"
    shutil.copy(folder / "part_at_4.pt", part)
    alone = w.finetune_run(resume_path=str(part))
    assert alone["history"]["train_reward"][0]["step"] == 1  # the history of updates 1-4 came with the state
    assert _max_diff(*map(_without_key_biases, (alone["weights"], reference["easytune"]["weights"]))) <= ATOL
