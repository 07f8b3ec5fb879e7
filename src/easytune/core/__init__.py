"""Framework-free core: motion features, data sources, models, samplers, rewards, preference mining,
fine-tuning methods and metrics.

Imports only torch, numpy, scipy and model libraries (transformers, diffusers, peft). Never kedro or mlflow:
``tests/core/test_boundary.py`` imports this package in a fresh interpreter and fails if either got loaded.
Importing this package has no side effects (no seeding, no device selection, no file I/O).
"""
