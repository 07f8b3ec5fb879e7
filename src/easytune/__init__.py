"""EasyTune: step-aware reward fine-tuning of text-to-motion diffusion models, as a Kedro project.

The framework-free library lives in :mod:`easytune.core` (torch, numpy, scipy, model libraries only);
:mod:`easytune.pipelines` holds thin Kedro adapters and :mod:`easytune.datasets` the catalog datasets.
"""

__version__ = "0.1.0"
