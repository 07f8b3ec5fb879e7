"""The study's run cache trusts a cached run only when its file matches the sha256 manifest written beside it
(issue #27): a flipped byte in a tensor or an edited record is detected, logged naming the file, and the run is
computed again; an intact cache is loaded without recomputation."""

import json
import logging
import struct
import zipfile

import torch

from easytune.core.study.runner import RunTask, run_task
from tests.core.study.test_runner import tiny_inputs

TASK = RunTask("easytune_all", 1e-2, 1)


def _cached(tmp_path):
    """A finished run in a fresh cache: (inputs, its output, its cached file)."""
    inputs = tiny_inputs(tmp_path)
    out = run_task(inputs, TASK)
    path = tmp_path / "runs" / TASK.variant / f"{TASK.tag}.pt"
    assert path.exists() and path.with_suffix(".sha256").exists()
    return inputs, out, path


def _flip_a_tensor_byte(path) -> None:
    """Flip one byte inside the stored bytes of the first snapshot tensor (torch's zip stores them uncompressed)."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size >= 4)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + 1] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_a_flipped_tensor_byte_is_detected_and_the_run_recomputed(tmp_path, caplog, one_torch_thread):
    inputs, out, path = _cached(tmp_path)
    _flip_a_tensor_byte(path)
    tampered = torch.load(path, map_location="cpu", weights_only=True)  # torch itself loads it: no check there
    assert any(not torch.equal(a, b) for snap, orig in zip(tampered["weights"], out.weights, strict=True)
               for a, b in zip(snap.values(), orig.values(), strict=True))
    with caplog.at_level(logging.INFO):
        again = run_task(inputs, TASK)
    assert "loaded from" not in caplog.text
    assert f"{path}: cached run not trusted" in caplog.text and "content hash" in caplog.text
    assert [s["val_reward"] for s in again.record["snapshots"]] == [s["val_reward"] for s in out.record["snapshots"]]
    for snap, orig in zip(again.weights, out.weights, strict=True):
        assert all(torch.equal(snap[k], orig[k]) for k in orig)
    caplog.clear()
    with caplog.at_level(logging.INFO):  # the recomputed run is cached again, with a fresh manifest
        run_task(inputs, TASK)
    assert "loaded from" in caplog.text


def test_an_edited_cached_record_is_detected_and_the_run_recomputed(tmp_path, caplog, one_torch_thread):
    inputs, out, path = _cached(tmp_path)
    blob = torch.load(path, map_location="cpu", weights_only=True)
    record = json.loads(blob["record"])
    record["snapshots"][-1]["val_reward"] = 99.0
    blob["record"] = json.dumps(record)
    torch.save(blob, path)  # a well-formed file with the same resume key
    with caplog.at_level(logging.INFO):
        again = run_task(inputs, TASK)
    assert "loaded from" not in caplog.text and f"{path}: cached run not trusted" in caplog.text
    assert again.record["snapshots"][-1]["val_reward"] == out.record["snapshots"][-1]["val_reward"] != 99.0


def test_a_cached_run_without_its_manifest_is_recomputed(tmp_path, caplog, one_torch_thread):
    inputs, _, path = _cached(tmp_path)
    path.with_suffix(".sha256").unlink()
    with caplog.at_level(logging.INFO):
        run_task(inputs, TASK)
    assert "loaded from" not in caplog.text and "content hashes) does not exist" in caplog.text


def test_an_intact_cache_is_loaded_without_recomputation(tmp_path, caplog, monkeypatch, one_torch_thread):
    import easytune.core.study.runner as runner

    inputs, out, path = _cached(tmp_path)

    def no_training(*args, **kwargs):
        raise AssertionError("an intact cached run was computed again")

    monkeypatch.setattr(runner, "finetune", no_training)
    with caplog.at_level(logging.INFO):
        again = run_task(inputs, TASK)
    assert f"loaded from {path}" in caplog.text and "not trusted" not in caplog.text
    assert again.record == out.record


WALL_CLOCK = {"wall_s", "signals_s", "train_s", "val_s", "s_per_update", "samples_per_s"}


def _without_clock(value):
    if isinstance(value, dict):
        return {k: _without_clock(v) for k, v in value.items() if k not in WALL_CLOCK | {"resumed_from", "interrupted"}}
    if isinstance(value, list):
        return [_without_clock(v) for v in value]
    return value


def test_a_study_run_killed_and_rerun_equals_the_uninterrupted_run(tmp_path, monkeypatch, one_torch_thread):
    """Reliability (#27): a study run interrupted after some updates (and some snapshots) and rerun resumes from its
    resumable state and records exactly what the uninterrupted run records, wall-clock fields aside, and says that
    it resumed; it used to over-count its cost after the resume (other snapshot points, other signals) and lose the
    snapshots taken before the interruption."""
    import easytune.core.study.runner as runner

    whole = run_task(tiny_inputs(tmp_path / "whole", run_cache=None), TASK).record
    real_finetune = runner.finetune

    class Killed(Exception):
        pass

    def killed_after_a_while(*args, **kwargs):
        real_finetune(*args, stop_after_updates=5, **kwargs)
        raise Killed

    inputs = tiny_inputs(tmp_path / "resumed")
    monkeypatch.setattr(runner, "finetune", killed_after_a_while)
    try:
        run_task(inputs, TASK)
    except Killed:
        pass
    monkeypatch.setattr(runner, "finetune", real_finetune)
    resumed = run_task(inputs, TASK).record
    assert resumed["resumed_from"] >= 5 and whole["resumed_from"] == 0
    assert len(resumed["snapshots"]) == len(whole["snapshots"]) == 3  # base + 2 budget points
    assert _without_clock(resumed) == _without_clock(whole)
