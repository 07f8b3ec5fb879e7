"""GPU benchmark at the paper preset (published model sizes): seconds per update and peak CUDA memory of every
fine-tuning method for T in {10, 20, 50} (documented command, not a test).

Runs with torch + numpy + tqdm + easytune.core only (no kedro, no mlflow). easytune.core.sampling.diffusion builds its
schedulers with diffusers, which the lent GPU machines do not have: the script then stops at once with exit code
2 and says how to install or carry the wheel (see benchmarks/common.py:require_diffusers).

    python benchmarks/gpu_paper_preset.py                       # MLD, batch 64, 196 frames, all methods
    python benchmarks/gpu_paper_preset.py --generator mdm --batch-size 64 --steps 10,20,50
Equivalent to ``benchmarks/memory.py --preset paper --device cuda`` with those defaults; reports the CUDA
extra-memory ratio EasyTune / DRaFT-50 over no-grad sampling (paper: 0.31) and s/update per method
(paper, A6000: DRaFT 5.61, AlignProp 5.17, DRTune 4.90, ReFL 4.72, EasyTune 1.47).
"""

from __future__ import annotations

import sys

import common  # noqa: F401  (checks diffusers first)
import torch


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark is for a GPU machine (use benchmarks/memory.py on CPU)")
    defaults = ["--preset", "paper", "--device", "cuda", "--batch-size", "64", "--frames", "196", "--updates", "3",
                "--threads", "8"]
    sys.argv = [sys.argv[0], *defaults, *sys.argv[1:]]  # explicit arguments win (argparse keeps the last)
    import memory

    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    memory.main()


if __name__ == "__main__":
    main()
