"""Fine-tuning configuration, in one place: the run's settings (:class:`FinetuneConfig`), the ``params:finetune``
group (:class:`FinetuneSettings`), the one merge of ``finetune.common`` with a method's overrides
(:func:`method_config`), the registry of pretrained generators (:data:`GENERATORS`: each kind's checkpoint,
whether it needs the motion VAE, the ``pretrain`` tags that train it) and the files of a released generator and
reward (:class:`ReleasedFinetuneSettings`, ``finetune.generator: released_mld``).

Used alike by the ``finetune`` node, the torchrun entry point (:mod:`.job`) and the method study
(:mod:`easytune.core.study.config`). ``conf/base/parameters_finetune.yml`` sets every :class:`FinetuneConfig` field
in ``finetune.common`` (a test checks it), so the code defaults below are those of a notebook or a test, never
silently those of a project run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np

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
from easytune.core.published.containers import PublishedAssetError
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
        realism_weight: weight of the realism critic's term added to the reward (R + realism_weight * log
            sigmoid(logit of "real") of :class:`~easytune.core.reward.critic.RealismCritic`, trained to tell real
            motions from the pretrained generator's samples; the term is <= 0, about -|logit| for motions the critic
            calls generated); 0: off (no critic is read). A scale: the term's range on val (real minus base
            samples) times the weight against the reward's headroom.
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


#: finetune.generator values that fine-tune a released model (files named by ``finetune.released``)
RELEASED_GENERATORS = ("released_mld",)


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


#: what each released file is (named in errors and in the README)
RELEASED_WHAT = {
    "checkpoint": "the released MLD checkpoint: MotionLCM's / EasyTune's T5 MLD checkpoints/mld_humanml/"
                  "mld_humanml_v1.ckpt (text_encoder: t5), or ChenFengYe's 1222_mld_humanml3d_FID041.ckpt "
                  "(text_encoder: clip)",
    "text_encoder_path": "the generator's text encoder folder (t5: sentence-transformers/sentence-t5-large, the whole "
                         "sentence-transformers folder; clip: openai/clip-vit-large-patch14, save_pretrained)",
    "reward.checkpoint.spm": "EasyTune's SPM reward checkpoint (a .pth holding {'state_dict': ...}; MotionRFT hosts "
                             "the weights on Hugging Face txf0620/MotionRFT_Models)",
    "reward.checkpoint.tmr": "TMR's run folder models/tmr_humanml3d_guoh3dfeats (with last_weights/*.pt)",
    "reward.text_encoder_path.spm": "sentence-transformers/sentence-t5-large (the SPM reads its T5 token states)",
    "reward.text_encoder_path.tmr": "distilbert-base-uncased (model and tokenizer, save_pretrained)",
    "reward.stats_dir": "TMR's motion statistics stats/humanml3d/guoh3dfeats/{mean,std}.pt",
    "dataset_dir": "the HumanML3D folder (its Mean.npy and Std.npy normalise the generator)",
}


@dataclass
class ReleasedRewardSettings:
    """The released reward: ``kind`` ``spm`` (EasyTune's SPM: ``checkpoint`` a .pth, ``text_encoder_path``
    sentence-t5-large, ``sample_latents`` the release's sampled latents instead of the means) or ``tmr``
    (``checkpoint`` TMR's run folder, ``stats_dir`` its mean.pt/std.pt, ``text_encoder_path`` distilbert)."""

    kind: Literal["spm", "tmr"] = "spm"
    checkpoint: str = ""
    text_encoder_path: str = ""
    stats_dir: str = ""
    sample_latents: bool = False
    num_heads: Annotated[int, AT_LEAST_1] = 4


@dataclass
class ReleasedFinetuneSettings:
    """``params:finetune.released`` (read when ``finetune.generator`` is ``released_mld``): the released MLD, its
    text encoder and the released reward, as paths relative to ``root`` (absolute paths as they are); ``root`` and
    ``dataset_dir`` come from environment variables (named by ``*_variable`` in errors)."""

    root: str = ""
    root_variable: str = ""
    dataset_dir: str = ""
    dataset_dir_variable: str = ""
    checkpoint: str = ""
    text_encoder: Literal["clip", "t5"] = "t5"
    text_encoder_path: str = ""
    guidance_scale: Annotated[float | None, NON_NEGATIVE] = None
    num_steps: Annotated[int, SAMPLING_STEPS] = 50
    num_heads: Annotated[int, AT_LEAST_1] = 4
    reward: ReleasedRewardSettings = field(default_factory=ReleasedRewardSettings)

    def path(self, value: str, parameter: str, what: str, folder: bool = False) -> Path:
        """``value`` (``finetune.released.<parameter>``) resolved against ``root``; it must exist, else one
        :class:`PublishedAssetError` naming the parameter, the variable and what to put there."""
        if not value:
            raise PublishedAssetError(f"finetune.released.{parameter} is empty; name {what}")
        p = Path(value).expanduser()
        if not p.is_absolute():
            if not self.root:
                var = self.root_variable
                raise PublishedAssetError(
                    f"finetune.released.{parameter}: finetune.released.root is empty"
                    + (f" (environment variable {var} is not set)" if var else "")
                    + f"; set {var or 'finetune.released.root'} to the folder holding {what}")
            p = Path(self.root).expanduser() / p
        if not (p.is_dir() if folder else p.is_file()):
            source = (f" (finetune.released.root from {self.root_variable}={self.root})"
                      if self.root_variable and not Path(value).is_absolute() else "")
            raise PublishedAssetError(f"finetune.released.{parameter} = {value!r}: no {'folder' if folder else 'file'} "
                                      f"{p}{source}. Put there {what}")
        return p

    def generator_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """The generator's HumanML3D ``Mean.npy`` / ``Std.npy`` (from ``dataset_dir``)."""
        folder = Path(self.dataset_dir).expanduser() if self.dataset_dir else None
        if folder is None or not folder.is_dir():
            var = self.dataset_dir_variable
            raise PublishedAssetError(
                f"finetune.released.dataset_dir = {self.dataset_dir!r}: not a folder"
                + (f" (environment variable {var}{' is not set' if not self.dataset_dir else ''})" if var else "")
                + f"; set {var or 'finetune.released.dataset_dir'} to {RELEASED_WHAT['dataset_dir']}")
        out = []
        for name in ("Mean.npy", "Std.npy"):
            if not (folder / name).is_file():
                raise PublishedAssetError(f"{folder / name}: no such file; {RELEASED_WHAT['dataset_dir']}")
            out.append(np.load(folder / name, allow_pickle=False).astype(np.float32))
        return out[0], out[1]

    def resolved(self) -> dict[str, str]:
        """Every file the run reads, resolved (the checkpoint's metadata and the resume key record them)."""
        r = self.reward
        out = {"checkpoint": str(self.path(self.checkpoint, "checkpoint", RELEASED_WHAT["checkpoint"])),
               "text_encoder_path": str(self.path(self.text_encoder_path, "text_encoder_path",
                                                  RELEASED_WHAT["text_encoder_path"], folder=True)),
               "reward_checkpoint": str(self.path(r.checkpoint, "reward.checkpoint", RELEASED_WHAT[f"reward.checkpoint.{r.kind}"],
                                                  folder=r.kind == "tmr")),
               "reward_text_encoder_path": str(self.path(r.text_encoder_path, "reward.text_encoder_path",
                                                         RELEASED_WHAT[f"reward.text_encoder_path.{r.kind}"], folder=True))}
        if r.kind == "tmr":
            out["reward_stats_dir"] = str(self.path(r.stats_dir, "reward.stats_dir", RELEASED_WHAT["reward.stats_dir"],
                                                    folder=True))
        return out


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

    generator: Literal["mld", "mdm", "mlcm", "released_mld"] = "mld"
    resume_dir: str | None = "data/06_models/resume/finetune"
    released: ReleasedFinetuneSettings | None = None  # generator released_mld: the released files
    common: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, Any] = field(default_factory=dict)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    realism_critic: CriticTrainingConfig = field(default_factory=CriticTrainingConfig)

    def __post_init__(self) -> None:
        if self.generator in RELEASED_GENERATORS and self.released is None:
            raise ConfigError(f"finetune.generator = {self.generator!r} needs finetune.released (the released MLD, "
                              f"its text encoder and the released reward; conf/humanml3d_published)")
        method_config(self.common, where="finetune.common")
        for name, options in self.methods.items():
            method_config(self.common, options, where=f"finetune.methods.{name}")

    @property
    def is_released(self) -> bool:
        """A released generator (``finetune.released``), not one of the project's pretrained checkpoints."""
        return self.generator in RELEASED_GENERATORS

    @property
    def spec(self) -> GeneratorSpec:
        if self.is_released:
            raise ConfigError(f"finetune.generator = {self.generator!r} is a released model read from "
                              f"finetune.released, not a pretrained checkpoint of this project")
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
