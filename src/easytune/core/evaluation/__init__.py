"""Independent evaluation of text-to-motion generators (framework-free).

- :mod:`.evaluator`: ``MotionTextEvaluator`` (kind ``evaluator``), its contrastive training ``train_evaluator``;
- :mod:`.metrics`: R-Precision (and the duplicate-aware variant), MM-Dist, FID, Diversity, MultiModality, mean/CI;
- :mod:`.plausibility`: foot skating, ground penetration, floating, jitter on recovered joints;
- :mod:`.classifier`: ``ContentClassifier`` (kind ``content_classifier``) for content accuracy;
- :mod:`.protocol`: motion sources, the replicated protocol, sanity checks and the results table.
"""
