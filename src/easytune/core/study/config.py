"""Study configuration: which variants, seeds, learning rates, budget, snapshots and views."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from easytune.core.finetune.config import FinetuneConfig, method_config
from easytune.core.finetune.policies import make_policy
from easytune.core.infra.config import ConfigError, from_dict, parameter_group
from easytune.core.study.signals import SignalConfig

#: reward checkpoints a variant may fine-tune with (the reward pipeline's, all of the primary seed)
REWARD_CHECKPOINTS = ("reward_model", "retrieval_model", "reward_model_no_spl")

#: FinetuneConfig fields the study sets itself (a variant or ``finetune`` may not override them)
STUDY_OWNED = ("method", "policy", "lr", "max_cost_gflops", "max_train_s", "snapshot_at", "max_updates",
               "val_every", "patience", "restore_best", "resume_path")


@dataclass
class VariantSpec:
    """One fine-tuning variant: a method (``method`` + ``policy`` options), other :class:`FinetuneConfig` fields it
    sets (``finetune``, e.g. ``kl_weight``), its learning-rate grid (None: the study's) or ``lr_from`` (use the
    learning rate chosen for that variant: no selection runs), the reward it fine-tunes with (``reward``: after SPL,
    before SPL or the no-SPL control; every variant's validation signals use ``reward_model``), and ``enabled``."""

    method: str
    policy: dict[str, Any] = field(default_factory=dict)
    finetune: dict[str, Any] = field(default_factory=dict)
    lr_grid: list[float] | None = None
    lr_from: str | None = None
    reward: str = "reward_model"
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.reward not in REWARD_CHECKPOINTS:
            raise ConfigError(f"reward must be one of {list(REWARD_CHECKPOINTS)}, got {self.reward!r}")


@parameter_group("finetune_study")
@dataclass
class StudyConfig:
    """``params:finetune_study``.

    Attributes:
        variants: name -> :class:`VariantSpec`.
        seeds: training seeds of every variant (each seed: captions, noise and policy randomness of one run).
        selection_seed: the seed of the learning-rate selection runs (kept apart from ``seeds``, so the lr is not
            chosen on the runs that are reported).
        lr_grid: learning rates tried per variant; the one with the highest held-out reward at its admissible point
            (val split, :mod:`.signals`) is used for the seeded runs.
        grid_extensions: when the chosen learning rate is at an edge of its grid, the grid is extended one step
            outwards (the grid's own ratio at that edge) on the selection seed and the choice made again, at most
            this many times; a variant still at an edge is marked in the report.
        budget_gflops: every run's budget in forward + backward GFLOPs (:mod:`easytune.core.finetune.cost`).
        snapshot_at: fractions of the budget where weights are snapshotted (snapshot 0 is the base model).
        finetune: :class:`FinetuneConfig` fields for every run (over ``finetune.common``; e.g. batch size, warm-up,
            a constant learning rate via ``min_lr_ratio: 1``).
        signals: validation signals and the admissibility guard (:class:`SignalConfig`).
        headroom_fractions: fractions of the headroom (held-out reward of the real val motions minus the base's)
            where the equal-reward view reads the metrics (the gain over the base is fraction x headroom).
        protocol: overrides of ``evaluation.protocol`` for scoring snapshots on the test split
            (default: one generation per snapshot, no MultiModality: every training seed generates with its own
            noise, and the base is scored with each seed's noise too, so every difference is paired by seed;
            MultiModality is reported by the evaluation pipeline).
        key_generations: generations of the test set (at least; ``protocol.generation_replications`` when larger)
            at the points the report leans on: the base of every seed, each run's final snapshot and its
            admissible snapshot.
        metrics: test metrics tabulated in the views.
        seconds_points: fractions of the shortest variant's mean training seconds for the equal-seconds view.
        spl_ablation: [variant with the SPL reward, the same variant with the reward before SPL] (paper Fig. 8):
            win rates of the first over the second per metric over matched seeds and snapshots (empty: none).
        run_cache: folder of finished runs (and their resume files): a rerun with the same key loads them.
        threads: torch intra-op threads of each run node and scoring node, whatever the runner (the nodes run side
            by side under ``--runner ParallelRunner``; results may differ in the last bits between thread counts).
    """

    variants: dict[str, VariantSpec] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    selection_seed: int = 100
    lr_grid: list[float] = field(default_factory=lambda: [1e-5, 3e-5, 1e-4])
    grid_extensions: int = 2
    budget_gflops: float = 1500.0
    snapshot_at: list[float] = field(default_factory=lambda: [0.5, 1.0])
    finetune: dict[str, Any] = field(default_factory=dict)
    signals: SignalConfig = field(default_factory=SignalConfig)
    headroom_fractions: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 0.9])
    protocol: dict[str, Any] = field(default_factory=lambda: {"generation_replications": 1, "mm_captions": 0})
    key_generations: int = 2
    metrics: list[str] = field(default_factory=lambda: [
        "R@1", "R@2", "R@3", "FID", "MM-Dist", "Diversity", "content_accuracy", "foot_skating", "jitter"])
    seconds_points: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])
    spl_ablation: list[str] = field(default_factory=list)
    run_cache: str | None = "data/06_models/study/runs"
    threads: int = 1

    def __post_init__(self) -> None:
        self.variants = {name: spec if isinstance(spec, VariantSpec) else
                         from_dict(VariantSpec, spec, where=f"finetune_study.variants.{name}")
                         for name, spec in self.variants.items()}
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"finetune_study.seeds must be distinct and non-empty, got {self.seeds}")
        if self.selection_seed in self.seeds:
            raise ConfigError(f"finetune_study.selection_seed ({self.selection_seed}) must not be one of the study "
                              f"seeds {self.seeds}: the learning rate would be chosen on runs that are reported")
        if not self.budget_gflops > 0:
            raise ConfigError(f"finetune_study.budget_gflops must be > 0, got {self.budget_gflops}")
        if not self.snapshot_at or self.snapshot_at[-1] != 1.0:
            raise ConfigError(f"finetune_study.snapshot_at must end at 1.0 (the whole budget), got {self.snapshot_at}")
        for name, spec in self.variants.items():
            grid = self.grid(name)
            if not grid or any(not lr > 0 for lr in grid):
                raise ConfigError(f"finetune_study: learning-rate grid of {name} must be positive values, got {grid}")
            owned = sorted(set(spec.finetune) & set(STUDY_OWNED))
            if owned:
                raise ConfigError(f"finetune_study.variants.{name}.finetune sets {owned}, which the study sets itself")
            make_policy(spec.method, spec.policy)  # unknown method or option: fail now, not after hours
            if spec.lr_from is not None and (spec.lr_from not in self.variants or
                                             self.variants[spec.lr_from].lr_from is not None):
                raise ConfigError(f"finetune_study.variants.{name}.lr_from: {spec.lr_from!r} must be another variant "
                                  f"that chooses its own learning rate")
        owned = sorted(set(self.finetune) & set(STUDY_OWNED))
        if owned:
            raise ConfigError(f"finetune_study.finetune sets {owned}, which the study sets itself")
        if self.spl_ablation:
            if len(self.spl_ablation) != 2 or any(v not in self.variants for v in self.spl_ablation):
                raise ConfigError(f"finetune_study.spl_ablation must name two variants, got {self.spl_ablation}")
            after, before = (self.variants[v] for v in self.spl_ablation)
            if (after.method, after.policy, after.finetune) != (before.method, before.policy, before.finetune) \
                    or after.reward == before.reward:
                raise ConfigError("finetune_study.spl_ablation: the two variants must differ only in their reward")
        if self.threads < 1:
            raise ConfigError(f"finetune_study.threads must be >= 1, got {self.threads}")
        if "base" in self.variants:
            raise ConfigError("finetune_study.variants: 'base' is reserved (study_base scores the pretrained model)")
        if int(self.protocol.get("generation_replications", 1)) < 1:
            raise ConfigError("finetune_study.protocol.generation_replications must be >= 1")
        if self.key_generations < 1:
            raise ConfigError(f"finetune_study.key_generations must be >= 1, got {self.key_generations}")
        if self.grid_extensions < 0:
            raise ConfigError(f"finetune_study.grid_extensions must be >= 0, got {self.grid_extensions}")
        if not self.headroom_fractions or any(not 0 < f <= 1 for f in self.headroom_fractions):
            raise ConfigError(f"finetune_study.headroom_fractions must be in (0, 1], got {self.headroom_fractions}")

    @property
    def enabled(self) -> list[str]:
        """Enabled variants; a variant whose ``lr_from`` is enabled keeps it enabled too."""
        on = {name for name, spec in self.variants.items() if spec.enabled}
        on |= {self.variants[n].lr_from for n in on if self.variants[n].lr_from is not None}
        return [name for name in self.variants if name in on]

    def grid(self, variant: str) -> list[float]:
        spec = self.variants[variant]
        return list(self.lr_grid if spec.lr_grid is None else spec.lr_grid)

    def run_config(self, variant: str, lr: float, common: dict[str, Any] | None = None,
                   resume_path: str | None = None) -> FinetuneConfig:
        """The :class:`FinetuneConfig` of one run of ``variant`` at ``lr``: ``common`` (``finetune.common``), then
        the study's ``finetune``, the variant's ``finetune``, and the fields the study owns (GFLOPs budget,
        snapshots; no validation, early stopping or best-weight restore inside the run)."""
        spec = self.variants[variant]
        owned = {"method": spec.method, "policy": spec.policy, "lr": lr, "max_cost_gflops": self.budget_gflops,
                 "max_train_s": None, "snapshot_at": list(self.snapshot_at), "max_updates": 10**9,
                 "val_every": 0, "patience": None, "restore_best": False, "resume_path": resume_path}
        config = method_config(common, self.finetune, spec.finetune, owned, where=f"finetune_study run {variant}")
        if config.lora.enabled:
            raise ConfigError(f"finetune_study run {variant}: LoRA is not supported in the study (snapshots are full "
                              f"denoiser weights); set lora.enabled: false")
        return config
