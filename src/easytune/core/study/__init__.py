"""The method-comparison study: fine-tuning variants x training seeds, snapshots along a machine-independent cost
budget, validation signals that never read the test split or the evaluator, and the four views of the results.

- :mod:`.config`: :class:`StudyConfig` (variants, seeds, learning-rate grid, budget, snapshots, views);
- :mod:`.signals`: validation signals of a generator on the val split (held-out reward, reward-space FID);
- :mod:`.runner`: learning-rate selection and the seeded runs of one variant (snapshots + their signals);
- :mod:`.scoring`: test-split scores of snapshots with the independent evaluator (generation replicated);
- :mod:`.views`: confidence intervals over seeds, equal-cost / equal-training-seconds / equal-reward-gain views,
  the Pareto front of R@1 against FID, and the best admissible point per variant.
"""
