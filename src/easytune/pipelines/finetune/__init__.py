"""``finetune``: reward fine-tuning of the pretrained generator, one namespaced template per method.

``create_pipeline()`` (registered as ``finetune``) runs the default method(s); ``create_compare_pipeline()``
(for the lead to register as ``finetune_compare``) runs every method; pick some with ``--namespaces``.
"""

from easytune.pipelines.finetune.pipeline import (
    ALL_METHODS,
    DEFAULT_METHODS,
    create_compare_pipeline,
    create_pipeline,
)

__all__ = ["ALL_METHODS", "DEFAULT_METHODS", "create_compare_pipeline", "create_pipeline"]
