"""Content classifier: learns separable labels, keeps its vocabulary in the checkpoint, handles unlabelled data."""

import numpy as np
import pytest
import torch

from easytune.core.evaluation.classifier import (
    ClassifierConfig,
    ClassifierTrainConfig,
    predict_labels,
    train_content_classifier,
)
from easytune.core.evaluation.evaluator import denormalise_padded
from easytune.core.evaluation.protocol import content_accuracy
from easytune.core.infra.checkpoint import build_from_checkpoint, make_checkpoint
from tests.core.evaluation.synthetic import make_split, make_stats

TINY = ClassifierTrainConfig(model=ClassifierConfig(movement_dim=16, hidden=16, dropout=0.0), steps=80,
                             batch_size=16, lr=3e-3, log_every=20)


def test_classifier_learns_content_labels_and_round_trips():
    torch.set_num_threads(1)
    train, test, stats = make_split(48, seed=0), make_split(24, seed=1), make_stats()
    model, history = train_content_classifier(train, stats, TINY)
    assert history["labels"] == ["action0", "action1", "action2", "action3"]
    assert history["train_accuracy"] > 0.9
    raw = denormalise_padded(test.features, test.lengths, stats)
    acc = content_accuracy(model, raw, test.lengths, test.labels)
    assert acc > 0.8
    # a generator whose motions ignore the caption scores near chance (4 classes)
    perm = np.random.default_rng(0).permutation(len(test))
    assert content_accuracy(model, raw[perm], test.lengths[perm], test.labels) < acc - 0.3
    rebuilt = build_from_checkpoint(make_checkpoint("content_classifier", model), allowed_kinds=["content_classifier"])
    np.testing.assert_array_equal(predict_labels(rebuilt, raw, test.lengths), predict_labels(model, raw, test.lengths))


def test_without_labels_content_accuracy_is_null():
    train, stats = make_split(8, seed=0), make_stats()
    train.labels = np.full(len(train), "")
    model, history = train_content_classifier(train, stats, TINY)
    assert not model.has_labels and history["train_accuracy"] is None
    raw = denormalise_padded(train.features, train.lengths, stats)
    assert content_accuracy(model, raw, train.lengths, train.labels) is None
    assert content_accuracy(None, raw, train.lengths, train.labels) is None


def test_early_stopping_on_val_accuracy_keeps_the_best_weights():
    """#22 (a stronger judge): the classifier stops when its val accuracy stops improving and keeps the best."""
    import dataclasses

    torch.set_num_threads(1)
    train, val, stats = make_split(48, seed=0), make_split(24, seed=1), make_stats()
    config = dataclasses.replace(TINY, steps=600, val_every=10, patience=2)
    model, history = train_content_classifier(train, stats, config, val=val)
    values = [h["value"] for h in history["val_accuracy"]]
    assert history["steps_run"] < 600 and history["best_val_accuracy"] == max(values)
    raw = denormalise_padded(val.features, val.lengths, stats)
    assert content_accuracy(model, raw, val.lengths, val.labels) == pytest.approx(history["best_val_accuracy"])
