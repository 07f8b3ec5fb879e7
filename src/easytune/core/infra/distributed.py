"""Data-parallel training with ``torch.distributed``: one module for every training loop of the project.

Scheme (the same for generator pretraining, reward training and fine-tuning):

- **One global batch, sharded.** Every rank draws the *global* batch of a single-process run from the same seeded
  streams (captions, lengths, crops, noise, timesteps) and keeps its rows (:class:`Shard`: contiguous, equal sizes,
  so the global batch size must be a multiple of the number of processes). The union of the ranks' samples is
  therefore the single-process batch, and every rank's random streams stay identical, which makes a resumable
  checkpoint written by rank 0 valid for every rank and for any number of processes.
- **Gradients averaged at every optimizer update** (:func:`average_gradients`: one all-reduce of all gradients
  flattened per dtype and device, divided by the world size) before clipping and the optimizer step. Each rank's
  loss is a mean over its rows, so with equal shards the average is the gradient of the global batch mean (exact
  for means over equally sized per-sample terms; a mean of per-rank means for masked means, as DDP does). Contrastive
  losses gather the other ranks' embeddings with :func:`gather_rows` (differentiable) so negatives are global.
- **Rank 0 alone writes** checkpoints and reports (:func:`is_main`); values every rank must agree on (a validation
  score, a stop decision, a resumed state) are computed on rank 0 and broadcast (:func:`broadcast_object`,
  :func:`any_true`).

Launch: ``torchrun`` (or :func:`launch_local`, which runs ``fn`` in ``nproc`` local workers through torch's elastic
launcher and returns rank 0's result) sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``;
:func:`init_from_env` joins the process group (``nccl`` on CUDA with one GPU per local rank, ``gloo`` on CPU).
Without a process group every helper is a no-op, so the loops run unchanged in one process.

Failures (issue #27): a rank whose work raises must not leave the others waiting in a collective until the process
group's timeout (30 minutes by default). :func:`fail_fast` wraps a rank's work: on an exception the rank writes its
cause under a key of the rendezvous store, leaves the process group without a barrier (:func:`abort`) and raises;
every rank runs a watchdog thread that polls that key and ends its process within a second, printing the failing
rank's cause. :func:`launch_local` then raises the failing rank's error (the launcher stops the other workers), and
its workers die with the process that started them (:func:`easytune.core.infra.lifeline.die_with_parent`).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from easytune.core.infra.lifeline import die_with_parent
from easytune.core.infra.runtime import resolve_device

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ process group
@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its machine.

    ``initialized``: a process group exists (also with one process: the collectives then run, which is what the
    1-GPU overhead measurement needs)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """More than one process: batches are split across ranks."""
        return self.world_size > 1


def context() -> DistContext:
    """The current process's :class:`DistContext` (one process, rank 0, without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), True)
    return DistContext()


def is_main() -> bool:
    """True on rank 0 (and in a plain single process): the one process that writes files and records."""
    return context().is_main


def init_from_env(device: str = "auto", *, timeout_s: float = 1800.0) -> tuple[DistContext, torch.device]:
    """Join the process group described by the launcher's environment (``torchrun`` or :func:`launch_local`).

    Without ``RANK`` in the environment nothing is initialised (one process). On CUDA each process takes the GPU
    ``cuda:LOCAL_RANK`` and the ``nccl`` backend; on CPU the ``gloo`` backend. Returns (context, device).
    """
    dev = resolve_device(device)
    if "RANK" not in os.environ or not dist.is_available():
        return context(), dev
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) are "
                             f"visible: start at most one process per GPU (--nproc-per-node)")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        log.info("rank %d of %d joined the process group (%s, %s)", dist.get_rank(), dist.get_world_size(),
                 backend, dev)
    return context(), dev


def shutdown() -> None:
    """Leave the process group (after a barrier, so no rank exits while another still needs it)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def abort() -> None:
    """Leave the process group at once, without the barrier of :func:`shutdown` (after a failure on this rank: the
    other ranks are not at a barrier and would never reach it)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if dist.get_backend() == "nccl" and hasattr(dist.distributed_c10d, "_abort_process_group"):
            dist.distributed_c10d._abort_process_group()  # pending NCCL work is cancelled, not awaited
        else:
            dist.destroy_process_group()
    except Exception as exc:  # noqa: BLE001 - already failing: the original error is the one to raise
        log.warning("leaving the process group after a failure: %s", exc)


#: rendezvous-store key under which a failing rank writes its cause (every rank's watchdog polls it)
FAILURE_KEY = "easytune/failed"


def _store():
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:  # noqa: BLE001 - no group, or a torch without it: no failure broadcast
        return None


def _report_failure(exc: BaseException) -> str | None:
    """Write this rank's failure (message and traceback) to the store when it is the first; -> the first failure's
    cause when another rank failed before this one (this failure then follows from it, e.g. a collective that the
    failed rank left), else None."""
    store = _store()
    if store is None:
        return None
    try:
        if store.add(f"{FAILURE_KEY}/count", 1) == 1:  # the first failure is the cause; later ones follow from it
            trace = "".join(traceback.format_exception(exc))[-4000:]
            store.set(FAILURE_KEY, f"rank {dist.get_rank()} failed ({type(exc).__name__}: {exc})\n{trace}")
            return None
        return store.get(FAILURE_KEY).decode(errors="replace")
    except Exception as err:  # noqa: BLE001
        log.warning("could not tell the other ranks about the failure: %s", err)
        return None


def _watch_failures(store, stop: threading.Event, interval_s: float) -> None:
    while not stop.wait(interval_s):
        try:
            if not store.check([FAILURE_KEY]):
                continue
            cause = store.get(FAILURE_KEY).decode(errors="replace")
        except Exception:  # noqa: BLE001 - the store is gone (the launcher ended): nothing left to watch
            return
        if stop.is_set():
            return
        _end_stopped(cause)  # this rank may be blocked in a collective that will never complete


def _end_stopped(cause: str) -> None:
    """End this rank because another one failed: the cause printed and written to this rank's error file, then
    ``os._exit(1)`` (no cleanup: the rank may be blocked in, or just out of, a collective that cannot complete)."""
    print(f"[rank {os.environ.get('RANK', '?')}] stopping: {cause}", file=sys.stderr, flush=True)
    _record_stop(cause)
    os._exit(1)


def _record_stop(cause: str) -> None:
    """Under an elastic launcher, write this rank's error file with the failing rank's cause, so that whichever rank
    the launcher sees end first, its error names the cause (a rank stopped by the watchdog may end before the failing
    rank has written its own error file)."""
    if not os.environ.get("TORCHELASTIC_ERROR_FILE"):
        return
    try:
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        ErrorHandler().record_exception(RuntimeError(f"stopped because {cause}"))
    except Exception as err:  # noqa: BLE001 - best effort: the cause is printed above anyway
        log.warning("could not record the stop in the error file: %s", err)


@contextmanager
def fail_fast(interval_s: float = 0.5) -> Iterator[None]:
    """Run a rank's work so that a failure on any rank ends every rank within about ``interval_s``: an exception
    here is written to the rendezvous store, the group is left without a barrier (:func:`abort`) and the exception
    raised; a watchdog thread ends this process when another rank reports a failure. Leaves the group with
    :func:`shutdown` on success. Without a process group: just runs the block."""
    store = _store() if dist.is_available() and dist.is_initialized() else None
    stop = threading.Event()
    if store is not None:
        threading.Thread(target=_watch_failures, args=(store, stop, interval_s), name="easytune-failure-watch",
                         daemon=True).start()
    try:
        yield
    except BaseException as exc:
        stop.set()
        log.error("rank %s failed (%s: %s): stopping every rank", os.environ.get("RANK", "0"), type(exc).__name__,
                  exc)
        cause = _report_failure(exc)
        if cause is not None and os.environ.get("TORCHELASTIC_ERROR_FILE"):
            # another rank failed first (on a loaded machine this rank's collective can fail before the watchdog
            # sees the store): end as the watchdog does, with the first failure's cause in this rank's error file
            abort()
            _end_stopped(cause)
        abort()
        raise
    stop.set()
    shutdown()


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ------------------------------------------------------------------------------------------------ sharding
@dataclass(frozen=True)
class Shard:
    """This rank's rows ``start:stop`` of a global batch of ``total`` rows."""

    start: int
    stop: int
    total: int

    @property
    def rows(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def size(self) -> int:
        return self.stop - self.start

    def take(self, x):
        """``x[start:stop]`` along the first axis (tensor, array or anything sliceable)."""
        return x[self.start:self.stop]


def shard_of(total: int, ctx: DistContext | None = None, *, what: str = "batch size") -> Shard | None:
    """This rank's :class:`Shard` of a global batch of ``total`` rows; None with one process (nothing to split).

    Raises ValueError (naming ``what``) when ``total`` is not a multiple of the number of processes: equal shards
    keep the averaged gradient equal to the global batch's and every rank's random streams in step."""
    ctx = ctx or context()
    if not ctx.sharded:
        return None
    if total % ctx.world_size:
        raise ValueError(f"{what} ({total}) must be a multiple of the number of processes ({ctx.world_size}) "
                         f"for data-parallel training")
    size = total // ctx.world_size
    return Shard(ctx.rank * size, (ctx.rank + 1) * size, total)


def draw_rows(draw: Callable[[int], torch.Tensor], batch: int, shard: Shard | None) -> torch.Tensor:
    """``draw(n)`` makes n rows of random values (noise, timesteps, dropout flags). Without a shard: ``draw(batch)``;
    with one: the global batch's ``draw(shard.total)``, of which this rank keeps its rows, so the ranks' rows are
    together exactly the single-process draw."""
    if shard is None:
        return draw(batch)
    if shard.size != batch:
        raise ValueError(f"shard of {shard.size} rows for a local batch of {batch}")
    return draw(shard.total)[shard.rows]


def rank_seed(seed: int, *parts: int, ctx: DistContext | None = None) -> int:
    """A seed for a stream that must differ between ranks (sampler noise of stochastic samplers): ``seed`` itself in
    one process, else a 63-bit hash of (seed, parts, rank)."""
    ctx = ctx or context()
    if not ctx.sharded:
        return int(seed)
    import hashlib

    digest = hashlib.sha256(repr((int(seed), *map(int, parts), ctx.rank)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


# ------------------------------------------------------------------------------------------------ collectives
def average_gradients(params: Iterable[torch.nn.Parameter], extras: Sequence[float] = ()) -> list[float]:
    """Average the gradients of ``params`` over all ranks, in place (one all-reduce per dtype/device bucket), and
    the floats ``extras`` with them (e.g. the loss for logging); returns the averaged extras.

    Call after ``backward`` and before clipping and ``optimizer.step``. Parameters without a gradient are skipped
    (the same on every rank: every rank runs the same graph). No-op without a process group."""
    extras = [float(x) for x in extras]
    ctx = context()
    if not ctx.initialized:
        return extras
    grads = [p.grad for p in params if p.grad is not None]
    buckets: dict[tuple, list[torch.Tensor]] = {}
    for g in grads:
        buckets.setdefault((g.dtype, g.device), []).append(g)
    device = _collective_device()
    key = (torch.float32, device)
    if extras and key not in buckets:
        buckets[key] = []
    result = extras
    for (dtype, dev), tensors in buckets.items():
        parts = [t.reshape(-1) for t in tensors]
        with_extras = bool(extras) and (dtype, dev) == key
        if with_extras:
            parts.append(torch.tensor(extras, dtype=dtype, device=dev))
        flat = torch.cat(parts) if len(parts) > 1 else parts[0].clone()
        dist.all_reduce(flat)
        flat /= ctx.world_size
        offset = 0
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()
        if with_extras:
            result = [float(v) for v in flat[offset:].tolist()]
    return result


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled; for small values and states). Identity in one process."""
    if not context().initialized:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in one process)."""
    ctx = context()
    if not ctx.initialized:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def any_true(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank (stop decisions that must agree)."""
    if not context().initialized:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_reduce_floats(values: Sequence[float], op: str = "sum") -> list[float]:
    """Element-wise ``sum`` or ``max`` of ``values`` over ranks (``values`` itself in one process)."""
    values = [float(v) for v in values]
    if not context().initialized or not values:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return [float(v) for v in t.tolist()]


class _GatherRows(torch.autograd.Function):
    """All-gather along rows with a gradient: the backward sums the gradient over ranks and keeps this rank's rows
    (every rank computes the same global loss from the gathered rows)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        out = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(out, x.contiguous())
        ctx.rows = (rank * x.shape[0], (rank + 1) * x.shape[0])
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rows[0]:ctx.rows[1]]


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """(b, ...) on each rank -> (world * b, ...) rows of every rank in rank order (= the global batch); the gradient
    flows back to every rank's own rows. Identity with one process (also without a process group)."""
    ctx = context()
    if not ctx.sharded:
        return x
    if x.requires_grad:
        return _GatherRows.apply(x)
    out = [torch.empty_like(x) for _ in range(ctx.world_size)]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


# ------------------------------------------------------------------------------------------------ local launch
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _threads_per_worker(nproc: int) -> int:
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return max(1, (os.cpu_count() or 1) // max(1, nproc))


def _worker(fn: Callable[..., Any], args: tuple, device: str, threads: int, log_level: int, parent_pid: int,
            timeout_s: float) -> Any:
    """One worker of :func:`launch_local` (errors recorded for the launcher's report)."""
    from torch.distributed.elastic.multiprocessing.errors import record

    die_with_parent(parent_pid)
    return record(_run_worker)(fn, args, device, threads, log_level, timeout_s)


def _run_worker(fn: Callable[..., Any], args: tuple, device: str, threads: int, log_level: int,
                timeout_s: float = 1800.0) -> Any:
    """Join the group, run ``fn(device, *args)`` under :func:`fail_fast`, leave the group; rank 0's result (None on
    the others)."""
    logging.basicConfig(level=log_level, format=f"[rank {os.environ.get('RANK', '?')}] %(asctime)s %(name)s "
                                                "%(levelname)s: %(message)s")
    torch.set_num_threads(threads)
    ctx, dev = init_from_env(device, timeout_s=timeout_s)
    with fail_fast():
        out = fn(dev, *args)
    return out if ctx.is_main else None


class WorkerFailed(RuntimeError):
    """A worker of :func:`launch_local` failed: the message names the rank(s) and their error (with traceback)."""


def launch_local(fn: Callable[..., Any], args: tuple = (), *, nproc: int, device: str = "auto",
                 max_restarts: int = 0, timeout_s: float = 1800.0) -> Any:
    """Run ``fn(device, *args)`` in ``nproc`` worker processes on this machine through torch's elastic launcher
    (``torch.distributed.launcher.api.elastic_launch``, what ``torchrun`` uses) and return rank 0's result.

    ``fn`` must be a module-level function (workers are spawned and import it); ``args`` travel pickled. Each worker
    joins the group (:func:`init_from_env`: one GPU per worker on CUDA, gloo on CPU) with a c10d rendezvous on a
    free local port and the collective timeout ``timeout_s``. A failing worker stops the others within about a second
    (:func:`fail_fast`) and :class:`WorkerFailed` is raised with its error and traceback (from torch's
    ``ChildFailedError``); the workers die with this process.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    if resolve_device(device).type == "cuda" and nproc > torch.cuda.device_count():
        raise ValueError(f"nproc_per_node={nproc} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"easytune-{uuid.uuid4().hex[:12]}",
                          rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{free_port()}", max_restarts=max_restarts,
                          monitor_interval=0.1, start_method="spawn")
    level = logging.getLogger().getEffectiveLevel()
    try:
        results = elastic_launch(config, _worker)(fn, args, device, _threads_per_worker(nproc), level, os.getpid(),
                                                  timeout_s)
    except ChildFailedError as exc:
        raise WorkerFailed(_failure_message(exc)) from exc
    return results[0]


def _failure_message(exc) -> str:
    """The failing ranks of a ``ChildFailedError``: those that raised (with an error file) first, their messages."""
    failures = sorted(exc.failures.items(), key=lambda kv: (not kv[1].error_file_data, kv[1].timestamp, kv[0]))
    raised = [(rank, f) for rank, f in failures if f.error_file_data] or failures[:1]
    parts = []
    for rank, failure in raised:
        data = failure.error_file_data.get("message", {}) if failure.error_file_data else {}
        trace = data.get("extraInfo", {}).get("py_callstack", "") if isinstance(data, dict) else ""
        parts.append(f"rank {rank} failed (exit code {failure.exitcode}): {failure.message}"
                     + (f"\n{trace}" if trace and trace not in str(failure.message) else ""))
    return f"{exc.name}: " + "\n".join(parts)


def resolve_nproc(value: int | str, device: str = "auto") -> int:
    """``runtime.distributed.nproc_per_node``: an integer >= 1, or ``auto`` = every visible GPU (1 on CPU)."""
    if value == "auto":
        return max(1, torch.cuda.device_count()) if resolve_device(device).type == "cuda" else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"runtime.distributed.nproc_per_node must be an integer >= 1 or 'auto', got {value!r}")
    return value
