"""Which evaluator scores, and where the bring-your-own published files are (``params:evaluation.published``).

``evaluation.scored_by``: ``project`` (default: the evaluator the pipeline trains on the train split) or ``t2m``
(the standard T2M evaluator of Guo et al. 2022 from its released files). ``evaluation.published.models`` adds
released generators (MLD, MotionLCM v1, MDM) to the models scored. The files are named relative to
``published.root`` (an absolute path is taken as it is); the HumanML3D folder (``dataset_dir``) gives the captions'
word/POS tags (``texts/``) and the generators' ``Mean.npy`` / ``Std.npy``. A missing file is one error naming the
parameter, the environment variable the folder came from and what to put there.

Only configuration lives here (the evaluation layer does not import the importers); the pipeline node passes the
resolved paths to :mod:`easytune.core.published`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from easytune.core.infra.config import NON_NEGATIVE, SAMPLING_STEPS, from_dict

#: what each file is and where the released code gets it (named in errors and in the README)
WHAT = {
    "checkpoint.mld": "the released MLD-family checkpoint (1222_mld_humanml3d_FID041.ckpt from MLD's "
                      "prepare/download_pretrained_models.sh, or MotionLCM's mld_humanml_v1.ckpt / motionlcm_humanml_v1.ckpt)",
    "checkpoint.mdm": "the released MDM model<step>.pt with its args.json beside it (MDM README, humanml_trans_enc_512)",
    "text_encoder_path": "a transformers save_pretrained folder of the generator's text encoder (MLD: "
                         "openai/clip-vit-large-patch14 as deps/clip-vit-large-patch14; MotionLCM/EasyTune: "
                         "sentence-transformers/sentence-t5-large; MDM: openai/clip-vit-base-patch32)",
    "t2m_evaluator.checkpoint": "the T2M evaluator text_mot_match/model/finest.tar (MLD's "
                                "prepare/download_t2m_evaluators.sh unpacks it as deps/t2m/t2m/...)",
    "t2m_evaluator.meta_dir": "the evaluator's normalisation mean.npy and std.npy (deps/t2m/t2m/Comp_v6_KLD01/meta)",
    "t2m_evaluator.glove_dir": "the GloVe files our_vab_data.npy, our_vab_words.pkl, our_vab_idx.pkl (deps/glove, "
                               "from T2M's / MLD's prepare/download_glove.sh)",
    "dataset_dir": "the HumanML3D folder (texts/ with the word/POS tags, Mean.npy, Std.npy)",
}


class PublishedPathError(FileNotFoundError):
    """A configured published file or folder is missing; the message names the parameter, the variable and what to
    put there."""


@dataclass
class ReleasedModelSpec:
    """One released generator to score.

    family: ``mld`` (MLD, the T5 MLD of MotionLCM/EasyTune, MotionLCM v1: told apart by the file) or ``mdm``.
    checkpoint: the file (relative to ``published.root``). text_encoder: which encoder the MLD file was trained with
    (``clip``: ChenFengYe's MLD; ``t5``: MotionLCM / EasyTune); MDM uses CLIP ViT-B/32. text_encoder_path: that
    encoder's local folder. num_steps / guidance_scale: None = the family's released setting (MLD 50 / 7.5,
    MotionLCM 1 / 7.5, MDM diffusion_steps / 2.5).
    """

    family: Literal["mld", "mdm"] = "mld"
    checkpoint: str = ""
    text_encoder: Literal["clip", "t5"] = "clip"
    text_encoder_path: str = ""
    num_steps: Annotated[int | None, SAMPLING_STEPS] = None
    guidance_scale: Annotated[float | None, NON_NEGATIVE] = None

    def __post_init__(self) -> None:
        if self.family == "mdm" and self.text_encoder != "clip":
            raise ValueError("family mdm: text_encoder must be clip (the released MDM uses CLIP ViT-B/32)")


@dataclass
class T2MEvaluatorFiles:
    """The standard evaluator's files (MLD's ``deps/`` layout by default)."""

    checkpoint: str = "deps/t2m/t2m/text_mot_match/model/finest.tar"
    meta_dir: str = "deps/t2m/t2m/Comp_v6_KLD01/meta"
    glove_dir: str = "deps/glove"


@dataclass
class PublishedConfig:
    """``params:evaluation.published``: roots (from environment variables), the evaluator's files, the models."""

    root: str = ""
    root_variable: str = ""
    dataset_dir: str = ""
    dataset_dir_variable: str = ""
    t2m_evaluator: T2MEvaluatorFiles = field(default_factory=T2MEvaluatorFiles)
    models: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.models = {str(name): from_dict(ReleasedModelSpec, spec, where=f"evaluation.published.models.{name}")
                       for name, spec in (self.models or {}).items()
                       if spec is not None}  # null leaves a model out (--params "...models.<name>=null")

    def _root(self, parameter: str, what: str) -> Path:
        if not self.root:
            raise PublishedPathError(
                f"evaluation.published.{parameter}: evaluation.published.root is empty"
                + (f" (environment variable {self.root_variable} is not set)" if self.root_variable else "")
                + f"; set {self.root_variable or 'evaluation.published.root'} to the folder holding {what}")
        return Path(self.root).expanduser()

    def file(self, value: str, parameter: str, what_key: str | None = None, folder: bool = False) -> Path:
        """``value`` (the parameter ``evaluation.published.<parameter>``) resolved against ``root`` (absolute paths
        as they are); it must exist, else :class:`PublishedPathError` saying what to put there (``WHAT[what_key]``)."""
        what = WHAT.get(what_key or parameter, parameter)
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = self._root(parameter, what) / path
        if not (path.is_dir() if folder else path.is_file()):
            source = (f" (evaluation.published.root from {self.root_variable}={self.root})"
                      if self.root_variable and not Path(value).is_absolute() else "")
            raise PublishedPathError(f"evaluation.published.{parameter} = {value!r}: no {'folder' if folder else 'file'} "
                                     f"{path}{source}. Put there {what}")
        return path

    def dataset(self) -> Path:
        """The HumanML3D folder (``dataset_dir``)."""
        if not self.dataset_dir or not Path(self.dataset_dir).expanduser().is_dir():
            var = self.dataset_dir_variable
            raise PublishedPathError(
                f"evaluation.published.dataset_dir = {self.dataset_dir!r}: not a folder"
                + (f" (environment variable {var}{' is not set' if not self.dataset_dir else ''})" if var else "")
                + f"; set {var or 'evaluation.published.dataset_dir'} to {WHAT['dataset_dir']}")
        return Path(self.dataset_dir).expanduser()

    def model_paths(self, name: str) -> tuple[Path, Path]:
        """(checkpoint, text encoder folder) of ``models[name]``."""
        spec = self.models[name]
        for key, value, what in (("checkpoint", spec.checkpoint, WHAT["checkpoint." + spec.family]),
                                 ("text_encoder_path", spec.text_encoder_path, WHAT["text_encoder_path"])):
            if not value:
                raise PublishedPathError(f"evaluation.published.models.{name}.{key} is empty; name {what}")
        return (self.file(spec.checkpoint, f"models.{name}.checkpoint", f"checkpoint.{spec.family}"),
                self.file(spec.text_encoder_path, f"models.{name}.text_encoder_path", "text_encoder_path",
                          folder=True))

    def evaluator_paths(self) -> dict[str, Path]:
        """``checkpoint``, ``meta_dir``, ``glove_dir`` of the T2M evaluator and the HumanML3D ``texts`` folder."""
        t = self.t2m_evaluator
        texts = self.dataset() / "texts"
        if not texts.is_dir():
            raise PublishedPathError(f"evaluation.published.dataset_dir: no folder {texts}; the T2M evaluator reads "
                                     f"the captions' word/POS tags from {WHAT['dataset_dir']}")
        return {"checkpoint": self.file(t.checkpoint, "t2m_evaluator.checkpoint"),
                "meta_dir": self.file(t.meta_dir, "t2m_evaluator.meta_dir", folder=True),
                "glove_dir": self.file(t.glove_dir, "t2m_evaluator.glove_dir", folder=True),
                "texts_dir": texts}
