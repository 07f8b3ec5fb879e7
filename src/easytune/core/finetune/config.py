"""Fine-tuning configuration, in one place: the run's settings (:class:`FinetuneConfig`), the ``params:finetune``
group (:class:`FinetuneSettings`), the one merge of ``finetune.common`` with a method's overrides
(:func:`method_config`), and the registry of pretrained generators (:data:`GENERATORS`: each kind's checkpoint,
whether it needs the motion VAE, the ``pretrain`` tags that train it).

Used alike by the ``finetune`` node, the torchrun entry point (:mod:`.job`) and the method study
(:mod:`easytune.core.study.config`). ``conf/base/parameters_finetune.yml`` sets every :class:`FinetuneConfig` field
in ``finetune.common`` (a test checks it), so the code defaults below are those of a notebook or a test, never
silently those of a project run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from easytune.core.finetune.policies import POLICIES, Policy, make_policy
from easytune.core.infra.config import (
    AT_LEAST_1,
    BETA,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    SAMPLING_STEPS,
    SEED,
    UPDATES,
    ConfigError,
    from_dict,
    parameter_group,
)
from easytune.core.reward.critic import CriticTrainingConfig


@dataclass
class LoraOptions:
    """LoRA on the denoiser's Linear layers (peft); merged into the weights before saving."""

    enabled: bool = False
    rank: Annotated[int, AT_LEAST_1] = 8
    alpha: Annotated[float, POSITIVE] = 16.0
    dropout: Annotated[float, FRACTION] = 0.0
    target_modules: list[str] | None = None  # None: every nn.Linear of the denoiser


@dataclass
class RewardEnsembleOptions:
    """An ensemble of frozen reward models (:class:`~easytune.core.reward.ensemble.EnsembleReward`): ``members`` are
    catalog names of ``retrieval_model`` checkpoints (the ``finetune`` node's reward inputs: ``reward_model``,
    ``reward_model_seed1``, ``reward_model_seed2``, ``reward_model_no_spl``, ``retrieval_model``); ``mode`` ``mean``
    or ``conservative`` (mean - ``std_weight`` * standard deviation over the members)."""

    members: list[str] = field(default_factory=lambda: ["reward_model", "reward_model_seed1", "reward_model_seed2"])
    mode: Literal["mean", "conservative"] = "mean"
    std_weight: Annotated[float, NON_NEGATIVE] = 1.0

    def __post_init__(self) -> None:
        if len(self.members) < 2 or len(set(self.members)) != len(self.members):
            raise ValueError(f"reward_ensemble.members must name at least two different checkpoints, got "
                             f"{self.members}")


@dataclass
class FinetuneConfig:
    """One fine-tuning run (one method).

    Attributes:
        method: a key of :data:`~easytune.core.finetune.policies.POLICIES`; ``policy``: its options.
        num_steps: sampling steps T (None: the pretrained sampler's default); guidance_scale: CFG scale (None:
            the checkpoint's); reward_input: ``x0_hat`` (one-step prediction) or ``noisy`` (noise-aware reward,
            feature-space generators).
        batch_size: captions per trajectory; max_frames: cap on the sampled motion lengths (None: no cap).
        max_updates: optimizer-update budget (also the length of the LR schedule); max_trajectories: optional
            safety cap; max_train_s: budget in seconds of training (the update windows: validation excluded), checked
            after every optimizer update; max_cost_gflops: budget in the machine-independent cost unit of
            :mod:`.cost` (forward + backward GFLOPs of the rollout), checked after every update. Give every method
            the same budget to compare them at equal cost. None: off.
        snapshot_at: fractions of the primary budget (cost if set, else seconds, else updates) at which
            :func:`finetune` hands a copy of the weights to ``on_snapshot`` (the first update at or past each point).
        lr, betas, weight_decay, warmup_updates, min_lr_ratio: AdamW with linear warm-up then cosine decay to
            ``min_lr_ratio * lr`` over ``max_updates``; grad_clip: max grad norm (None: off). Every update logs its
            pre-clip gradient norm (``grad_norm_preclip``), whether clipping acted (``clipped``, 0/1) and its step
            index; the summary's ``clipping_by_step`` tabulates both per step index.
        reward_weight: multiplies the reward term (the paper's Table S1: 0.1 with grad_clip 1.0, the method
            ``easytune_paper`` of conf/base); kl_weight: weight of the Eq. S1 term (0: off), a guard against
            over-optimisation (the fine-tuned denoiser's output is held near the frozen pretrained one's).
        step_weight_mode: where a policy's per-step weight w_t (paper Table S4 reweighting) acts. ``loss`` (the
            paper's Algorithm 1, default): w_t multiplies the step's reward term, so whenever the gradient norm
            exceeds ``grad_clip`` clipping rescales the gradient to the same norm and w_t is erased (with every step
            clipped, any weighting gives the same updates). ``lr``: the step's gradient is computed and clipped
            without w_t, then the update is scaled by w_t (the learning rate of that update times w_t), so the
            weights survive clipping; the whole update is scaled, the KL term's share included. A policy that takes
            several rewards with different weights into one update is refused under ``lr``.
        reward_ensemble: optional ensemble of reward models (catalog names of ``retrieval_model`` checkpoints,
            ``members``) that replaces the single reward: the members' mean, or with ``mode: conservative`` the
            mean minus ``std_weight`` times their standard deviation (a guard: where the members disagree the
            reward is lowered). None: the one ``reward_model``.
        realism_weight: weight of the realism critic's term added to the reward (R + realism_weight * logit of
            "real" of :class:`~easytune.core.reward.critic.RealismCritic`, trained to tell real motions from the
            pretrained generator's samples); 0: off (no critic is read).
        reward_checkpointing: gradient checkpointing of the reward path (VAE decode + reward model): its
            activations are recomputed in backward, not kept (less memory per gradient-carrying step, one more
            forward of the reward path per update).
        val_every: validate every N updates (checked between trajectories; 0: never); val_captions: held-out
            captions scored; patience: validation rounds without improvement > min_delta before stopping
            (None: never stop early); restore_best: return the best-validated weights.
        resume_path: resumable checkpoint file (None: no resume); save_every_updates: its interval.
        bf16: bf16 autocast of the rollout's forward passes (denoiser, VAE decoder, reward model) on CUDA; a no-op
            on CPU. Off by default: check the reward curve against fp32 on your GPU first (benchmarks/).
    """

    method: str = "easytune_step"
    policy: dict[str, Any] = field(default_factory=dict)
    num_steps: Annotated[int | None, SAMPLING_STEPS] = None
    guidance_scale: Annotated[float | None, NON_NEGATIVE] = None
    reward_input: Literal["x0_hat", "noisy"] = "x0_hat"
    batch_size: Annotated[int, AT_LEAST_1] = 8
    max_frames: Annotated[int | None, AT_LEAST_1] = None
    max_updates: Annotated[int, UPDATES] = 100
    max_trajectories: Annotated[int | None, AT_LEAST_1] = None
    max_train_s: Annotated[float | None, POSITIVE] = None
    max_cost_gflops: Annotated[float | None, POSITIVE] = None
    snapshot_at: list[float] = field(default_factory=list)
    lr: Annotated[float, POSITIVE] = 1e-5
    betas: Annotated[list[float], BETA] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: Annotated[float, NON_NEGATIVE] = 0.0
    warmup_updates: Annotated[int, NON_NEGATIVE] = 0
    min_lr_ratio: Annotated[float, FRACTION] = 0.0
    grad_clip: Annotated[float | None, NON_NEGATIVE] = 1.0
    reward_weight: float = 1.0  # any sign (negative: minimise the reward, e.g. to test early stopping)
    kl_weight: Annotated[float, NON_NEGATIVE] = 0.0
    step_weight_mode: Literal["loss", "lr"] = "loss"
    reward_ensemble: RewardEnsembleOptions | None = None
    realism_weight: Annotated[float, NON_NEGATIVE] = 0.0
    reward_checkpointing: bool = False
    lora: LoraOptions = field(default_factory=LoraOptions)
    val_every: Annotated[int, NON_NEGATIVE] = 0
    val_captions: Annotated[int, AT_LEAST_1] = 16
    patience: Annotated[int | None, AT_LEAST_1] = None
    min_delta: Annotated[float, NON_NEGATIVE] = 0.0
    restore_best: bool = True
    resume_path: str | None = None
    save_every_updates: Annotated[int, NON_NEGATIVE] = 0
    bf16: bool = False

    def __post_init__(self) -> None:
        if self.max_updates < 1:
            raise ValueError(f"max_updates must be >= 1, got {self.max_updates}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if len(self.betas) != 2:
            raise ValueError(f"betas must have two values, got {self.betas}")
        if any(not 0 < f <= 1 for f in self.snapshot_at) or list(self.snapshot_at) != sorted(set(self.snapshot_at)):
            raise ValueError(f"snapshot_at must be increasing fractions in (0, 1], got {self.snapshot_at}")

    def budget(self) -> tuple[str, float]:
        """The primary budget (``cost_gflops``, ``train_s`` or ``updates``) and its size (snapshots are fractions
        of it)."""
        if self.max_cost_gflops is not None:
            return "cost_gflops", float(self.max_cost_gflops)
        if self.max_train_s is not None:
            return "train_s", float(self.max_train_s)
        return "updates", float(self.max_updates)

    def build_policy(self) -> Policy:
        return make_policy(self.method, self.policy)


@dataclass(frozen=True)
class GeneratorSpec:
    """One kind of pretrained generator: ``checkpoint`` is its catalog entry (``data/06_models/<checkpoint>.pt``),
    ``latent`` whether it samples motion-VAE latents (then ``motion_vae`` is needed too), ``pretrain_tags`` the
    ``kedro run --pipeline pretrain --tags`` that trains it."""

    kind: str
    checkpoint: str
    latent: bool
    pretrain_tags: str


#: finetune.generator -> its spec (the one registry; the catalog names match conf/base/catalog_pretrain.yml)
GENERATORS: dict[str, GeneratorSpec] = {
    "mld": GeneratorSpec("mld", "pretrained_latent_denoiser", latent=True, pretrain_tags="mld"),
    "mdm": GeneratorSpec("mdm", "pretrained_frame_denoiser", latent=False, pretrain_tags="mdm"),
    "mlcm": GeneratorSpec("mlcm", "pretrained_consistency_model", latent=True, pretrain_tags="mld` then `--tags mlcm"),
}


def generator_spec(kind: str, where: str = "finetune.generator") -> GeneratorSpec:
    if kind not in GENERATORS:
        raise ConfigError(f"{where} = {kind!r}: must be one of {sorted(GENERATORS)}")
    return GENERATORS[kind]


def method_config(*layers: dict[str, Any] | None, where: str) -> FinetuneConfig:
    """The one merge: :class:`FinetuneConfig` fields of ``layers`` applied in order (later keys win, key by key at
    the top level: ``finetune.common``, then a method's overrides, then e.g. the study's), validated with the
    method's policy options."""
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer is None:
            continue
        if not isinstance(layer, dict):
            raise ConfigError(f"{where} = {layer!r}: expected a mapping of FinetuneConfig fields")
        merged.update(layer)
    config = from_dict(FinetuneConfig, merged, where=where)
    if config.method not in POLICIES:
        raise ConfigError(f"{where}.method = {config.method!r}: must be one of {sorted(POLICIES)}")
    from_dict(POLICIES[config.method], config.policy, where=f"{where}.policy")
    return config


@dataclass
class AnalysisConfig:
    """Chain analyses (paper Fig. 3 and 4) on ``captions`` val captions of the pretrained generator."""

    captions: Annotated[int, AT_LEAST_1] = 4
    num_steps: Annotated[int | None, SAMPLING_STEPS] = None
    seed: Annotated[int, SEED] = 0


@parameter_group("finetune")
@dataclass
class FinetuneSettings:
    """``params:finetune``: which pretrained generator, where resume files go, the settings shared by every
    method (``common``: :class:`FinetuneConfig` fields), per-method overrides (``methods.<name>``), the chain
    analyses and the training of the realism critic (``realism_critic``, ``kedro run --pipeline realism_critic``).

    Built (by Kedro, before any node runs) it checks ``common`` and every method merged over it
    (:func:`method_config`); ``common`` and ``methods`` stay plain dicts (each run merges the one it runs)."""

    generator: Literal["mld", "mdm", "mlcm"] = "mld"
    resume_dir: str | None = "data/06_models/resume/finetune"
    common: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, Any] = field(default_factory=dict)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    realism_critic: CriticTrainingConfig = field(default_factory=CriticTrainingConfig)

    def __post_init__(self) -> None:
        method_config(self.common, where="finetune.common")
        for name, options in self.methods.items():
            method_config(self.common, options, where=f"finetune.methods.{name}")

    @property
    def spec(self) -> GeneratorSpec:
        return generator_spec(self.generator)

    def common_config(self) -> FinetuneConfig:
        return method_config(self.common, where="finetune.common")

    def run_config(self, options: dict[str, Any] | None, *, where: str) -> FinetuneConfig:
        """``common`` merged with one method's ``options``, its resume file under ``resume_dir`` (named after the
        method, relative to the project folder as in ``kedro run``)."""
        config = method_config(self.common, options, where=where)
        if self.resume_dir:
            config.resume_path = str(Path(self.resume_dir) / f"{config.method}.pt")
        return config

    def method(self, name: str) -> FinetuneConfig:
        """The run configuration of ``methods.<name>``."""
        if name not in self.methods:
            raise ConfigError(f"finetune.methods has no {name!r}; known: {sorted(self.methods)}")
        return self.run_config(self.methods[name], where=f"finetune.methods.{name}")

    def pretrained(self, available: dict[str, dict | None]) -> tuple[str, dict, dict | None]:
        """(catalog name, checkpoint, motion-VAE checkpoint or None) of the chosen generator from ``available``
        (catalog name -> checkpoint or None when it was never trained); a clear error naming what to run."""
        spec = self.spec
        needed = [spec.checkpoint, *(["motion_vae"] if spec.latent else [])]
        absent = [name for name in needed if available.get(name) is None]
        if absent:
            raise ValueError(f"finetune.generator is {self.generator!r} but {absent} (data/06_models/<name>.pt) do "
                             f"not exist: run `kedro run --pipeline pretrain --tags {spec.pretrain_tags}` first, or "
                             f"choose the generator that was trained")
        return spec.checkpoint, available[spec.checkpoint], available["motion_vae"] if spec.latent else None
