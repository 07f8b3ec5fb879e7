"""Signal subset: a seeded random subset of the val split stratified by content label (largest remainders, every
label present), not the first N clip ids."""

from collections import Counter

import numpy as np

from easytune.core.data.dataset import MotionSplit
from easytune.core.study.runner import light_splits
from easytune.core.study.signals import label_counts, stratified_subset


def labelled_split(labels: list[str]) -> MotionSplit:
    n = len(labels)
    return MotionSplit(ids=np.array([f"clip{i:03d}" for i in range(n)]), features=np.zeros((n, 4, 2), np.float32),
                       lengths=np.full(n, 4, np.int64), caption_offsets=np.arange(n + 1, dtype=np.int64),
                       caption_ids=np.arange(n, dtype=np.int64), labels=np.array(labels))


# sorted clip ids run label by label: the first 20 would all be "walk"
LABELS = ["walk"] * 60 + ["run"] * 30 + ["jump"] * 9 + ["wave"] * 1


def test_signal_subset_keeps_the_label_mix_of_the_split():
    split = labelled_split(LABELS)
    _, val = light_splits(split, split, 20, seed=0)
    # shares 12, 6, 1.8, 0.2: floors 12, 6, 1, 0 and every label present (wave's one takes jump's remainder)
    assert label_counts(val) == {"jump": 1, "run": 6, "walk": 12, "wave": 1}
    assert len(set(val.ids)) == 20 and list(val.ids) == sorted(val.ids)
    _, half = light_splits(split, split, 50, seed=0)  # exact shares: the split's proportions, halved
    assert label_counts(half) == {"jump": 4, "run": 15, "walk": 30, "wave": 1}  # 4.5 -> 4, wave's 0.5 -> 1


def test_largest_remainder_allocation_and_the_seed():
    labels = np.array(["a"] * 5 + ["b"] * 3 + ["c"] * 2)
    pick = stratified_subset(labels, 5, seed=1)  # shares 2.5, 1.5, 1.0: the tied remainder goes to the larger label
    assert Counter(labels[pick]) == {"a": 3, "b": 1, "c": 1}
    assert np.array_equal(pick, stratified_subset(labels, 5, seed=1))
    assert any(not np.array_equal(pick, stratified_subset(labels, 5, seed=s)) for s in range(2, 6))  # random within
    assert Counter(labels[stratified_subset(labels, 2, seed=0)]) == {"a": 1, "b": 1}  # fewer samples than labels
    assert np.array_equal(stratified_subset(labels, 99, seed=0), np.arange(10))  # more than the split: all of it
    unlabelled = stratified_subset(np.array([""] * 8), 3, seed=0)
    assert len(unlabelled) == 3 and not np.array_equal(unlabelled, np.arange(3))  # no labels: a random subset
