import torch

from easytune.core.finetune.accounting import SavedTensorsMeter, UpdateAccountant


def test_meter_counts_each_saved_storage_once_and_resets_after_backward():
    w = torch.randn(256, 256, requires_grad=True)  # 256 KiB
    x = torch.randn(4, 256)
    meter = SavedTensorsMeter()
    with meter:
        h = x @ w  # saves x (4 KiB) only: x needs no gradient
        y = ((h @ w) + (h @ w)).sum()  # saves h (4 KiB) and w (256 KiB) twice: same storages, counted once
        assert meter.live_bytes == (4 * 256 * 2 + 256 * 256) * 4
        y.backward()
        meter.graph_released()
        assert meter.live_bytes == 0
        with torch.no_grad():
            (x @ w).sum()  # nothing saved without grad
        assert meter.live_bytes == 0
    assert meter.peak_bytes == (4 * 256 * 2 + 256 * 256) * 4


def test_views_of_one_storage_count_once():
    base = torch.randn(8, 64, requires_grad=True)
    meter = SavedTensorsMeter()
    with meter:
        a, b = base[:4], base[4:]
        (a.exp().sum() + b.exp().sum()).backward()  # exp saves its outputs: two fresh storages of 1 KiB
    assert meter.peak_bytes == 2 * 4 * 64 * 4


def test_accountant_logs_metric_histories_per_update():
    acc = UpdateAccountant(device=torch.device("cpu"))
    w = torch.randn(16, 16, requires_grad=True)
    with acc.meter:
        for step in (1, 2):
            acc.start_window()
            (torch.randn(2, 16) @ w).sum().backward()
            acc.meter.graph_released()
            acc.end_update(step, {"train_reward": 0.5 * step})
    assert acc.history["train_reward"] == [{"value": 0.5, "step": 1}, {"value": 1.0, "step": 2}]
    assert [r["value"] for r in acc.history["peak_saved_bytes"]] == [2 * 16 * 4] * 2  # only the input is saved (w needs no grad wrt x)
    assert all(r["value"] >= 0 for r in acc.history["s_per_update"]) and "peak_cuda_bytes" not in acc.history
