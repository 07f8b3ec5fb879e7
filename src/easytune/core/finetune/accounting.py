"""Per-update accounting: tensors saved for backward (exact, device independent), wall time, CUDA peak.

:class:`SavedTensorsMeter` installs :func:`torch.autograd.graph.saved_tensors_hooks` while active. Every tensor
autograd saves for backward passes through the pack hook; the meter counts each underlying storage once (several
saved views of one storage, or one parameter saved by several steps, are one allocation), sums their ``nbytes``
into a live total and keeps the peak. :meth:`graph_released` (called after each ``backward``, when the graph is
freed) resets the live total. The figure is what the graph keeps alive, independent of the allocator and device;
tensors kept alive by :func:`torch.utils.checkpoint` for recomputation are not saved tensors and are not counted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch


def _storage_key(t: torch.Tensor) -> tuple:
    storage = t.untyped_storage()
    return (t.device.type, t.device.index, storage.data_ptr(), storage.nbytes())


class SavedTensorsMeter:
    """Context manager measuring the peak bytes of unique storages saved for backward.

    Usage::

        meter = SavedTensorsMeter()
        with meter:
            loss = model(x).sum(); loss.backward(); meter.graph_released()
        meter.peak_bytes
    """

    def __init__(self) -> None:
        self._live: dict[tuple, int] = {}
        self.live_bytes = 0
        self.peak_bytes = 0
        self._ctx = None

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        if t.layout == torch.strided and t.device.type != "meta":
            key = _storage_key(t)
            if key not in self._live:
                self._live[key] = key[3]
                self.live_bytes += key[3]
                self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        return t

    @staticmethod
    def _unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    def graph_released(self) -> None:
        """The graph was freed (after backward): the live total restarts from zero."""
        self._live.clear()
        self.live_bytes = 0

    def reset_peak(self) -> None:
        """Start a new measurement window (the peak restarts from the current live total)."""
        self.peak_bytes = self.live_bytes

    def __enter__(self) -> SavedTensorsMeter:
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)
        self._ctx = None


@dataclass
class UpdateAccountant:
    """Wall time, saved-tensor peak and CUDA peak per optimizer update, collected as metric histories.

    ``history`` has the MlflowMetricsHistoryDataset format ``{name: [{"value": v, "step": s}, ...]}``.
    """

    device: torch.device
    meter: SavedTensorsMeter = field(default_factory=SavedTensorsMeter)
    history: dict[str, list[dict]] = field(default_factory=dict)
    peak_saved_bytes: int = 0
    peak_cuda_bytes: int | None = None
    update_seconds: float = 0.0
    _t0: float = 0.0

    def start_window(self) -> None:
        """Begin timing/measuring the next update (call after the previous one, or at a trajectory start)."""
        self.meter.reset_peak()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._t0 = time.perf_counter()

    def pause(self) -> float:
        """Seconds since :meth:`start_window` (used to exclude validation time)."""
        return time.perf_counter() - self._t0

    def end_update(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        """Close the window of update ``step``: log ``metrics`` plus s_per_update / saved / CUDA peaks."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - self._t0
        self.update_seconds += seconds
        row = dict(metrics)
        row["s_per_update"] = seconds
        row["peak_saved_bytes"] = float(self.meter.peak_bytes)
        self.peak_saved_bytes = max(self.peak_saved_bytes, self.meter.peak_bytes)
        if self.device.type == "cuda":
            cuda_peak = int(torch.cuda.max_memory_allocated(self.device))
            row["peak_cuda_bytes"] = float(cuda_peak)
            self.peak_cuda_bytes = max(self.peak_cuda_bytes or 0, cuda_peak)
        self.log(step, row)
        return row

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.history.setdefault(name, []).append({"value": float(value), "step": int(step)})
