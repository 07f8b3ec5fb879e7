"""Key names and shapes of the released checkpoints, written from docs PUBLISHED_ASSETS.md section 1 (not from the
project's modules), so the importers are checked against the published layout rather than against themselves."""

from __future__ import annotations

import torch


def _layer(prefix: str, d: int, ff: int, decoder: bool) -> dict[str, tuple[int, ...]]:
    shapes = {"self_attn.in_proj_weight": (3 * d, d), "self_attn.in_proj_bias": (3 * d,),
              "self_attn.out_proj.weight": (d, d), "self_attn.out_proj.bias": (d,),
              "linear1.weight": (ff, d), "linear1.bias": (ff,), "linear2.weight": (d, ff), "linear2.bias": (d,),
              "norm1.weight": (d,), "norm1.bias": (d,), "norm2.weight": (d,), "norm2.bias": (d,)}
    if decoder:
        shapes |= {"multihead_attn.in_proj_weight": (3 * d, d), "multihead_attn.in_proj_bias": (3 * d,),
                   "multihead_attn.out_proj.weight": (d, d), "multihead_attn.out_proj.bias": (d,),
                   "norm3.weight": (d,), "norm3.bias": (d,)}
    return {prefix + k: v for k, v in shapes.items()}


def skip_stack(prefix: str, d: int, ff: int, layers: int, decoder: bool = False) -> dict[str, tuple[int, ...]]:
    half = (layers - 1) // 2
    out = _layer(f"{prefix}middle_block.", d, ff, decoder)
    for i in range(half):
        out |= _layer(f"{prefix}input_blocks.{i}.", d, ff, decoder) | _layer(f"{prefix}output_blocks.{i}.", d, ff,
                                                                              decoder)
        out |= {f"{prefix}linear_blocks.{i}.weight": (d, 2 * d), f"{prefix}linear_blocks.{i}.bias": (d,)}
    return out | {f"{prefix}norm.weight": (d,), f"{prefix}norm.bias": (d,)}


def mld_vae(d: int = 256, ff: int = 1024, layers: int = 9, nfeats: int = 263, n: int = 1, max_len: int = 500):
    return {"vae.query_pos_encoder.pe": (max_len, 1, d), "vae.query_pos_decoder.pe": (max_len, 1, d),
            "vae.global_motion_token": (2 * n, d), "vae.skel_embedding.weight": (d, nfeats),
            "vae.skel_embedding.bias": (d,), "vae.final_layer.weight": (nfeats, d), "vae.final_layer.bias": (nfeats,),
            **skip_stack("vae.encoder.", d, ff, layers), **skip_stack("vae.decoder.", d, ff, layers, decoder=True)}


def mld_denoiser(d: int = 256, ff: int = 1024, layers: int = 9, text: int = 768, max_len: int = 500,
                 mem_pos: bool = True, lcm: bool = False):
    out = {"denoiser.time_embedding.linear_1.weight": (d, text), "denoiser.time_embedding.linear_1.bias": (d,),
           "denoiser.time_embedding.linear_2.weight": (d, d), "denoiser.time_embedding.linear_2.bias": (d,),
           "denoiser.emb_proj.1.weight": (d, text), "denoiser.emb_proj.1.bias": (d,),
           "denoiser.query_pos.pe": (max_len, 1, d), **skip_stack("denoiser.encoder.", d, ff, layers)}
    if mem_pos:
        out["denoiser.mem_pos.pe"] = (max_len, 1, d)
    if lcm:
        out["denoiser.time_embedding.cond_proj.weight"] = (text, 256)
    return out


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.1 for k, s in shapes.items()}


def lightning_checkpoint(state: dict[str, torch.Tensor]) -> dict:
    """The Lightning container: ``state_dict`` beside plain non-tensor entries."""
    return {"state_dict": state, "epoch": 2999, "global_step": 123456, "pytorch-lightning_version": "1.8.6",
            "hyper_parameters": {"NAME": "mld", "model": {"latent_dim": [1, 256], "guidance_scale": 7.5}},
            "optimizer_states": [], "lr_schedulers": [], "callbacks": {}}


def mdm(d: int = 512, ff: int = 1024, layers: int = 8, nfeats: int = 263, clip: int = 512, max_len: int = 5000,
        pe: bool = True):
    out = {"input_process.poseEmbedding.weight": (d, nfeats), "input_process.poseEmbedding.bias": (d,),
           "embed_timestep.time_embed.0.weight": (d, d), "embed_timestep.time_embed.0.bias": (d,),
           "embed_timestep.time_embed.2.weight": (d, d), "embed_timestep.time_embed.2.bias": (d,),
           "embed_text.weight": (d, clip), "embed_text.bias": (d,),
           "output_process.poseFinal.weight": (nfeats, d), "output_process.poseFinal.bias": (nfeats,)}
    for i in range(layers):
        out |= _layer(f"seqTransEncoder.layers.{i}.", d, ff, decoder=False)
    if pe:
        out |= {"sequence_pos_encoder.pe": (max_len, 1, d), "embed_timestep.sequence_pos_encoder.pe": (max_len, 1, d)}
    return out


def mdm_args(**overrides) -> dict:
    """args.json fields of a released HumanML3D MDM (MDM utils/parser_util.py defaults)."""
    return {"dataset": "humanml", "arch": "trans_enc", "latent_dim": 512, "layers": 8, "noise_schedule": "cosine",
            "sigma_small": True, "cond_mask_prob": 0.1, "lambda_vel": 0.0, "seed": 10, "save_dir": "save/x",
            **overrides}


def _bigru(prefix: str, n_in: int, hidden: int, out: int) -> dict[str, tuple[int, ...]]:
    shapes = {"input_emb.weight": (hidden, n_in), "input_emb.bias": (hidden,), "hidden": (2, 1, hidden),
              "output_net.0.weight": (hidden, 2 * hidden), "output_net.0.bias": (hidden,),
              "output_net.1.weight": (hidden,), "output_net.1.bias": (hidden,),
              "output_net.3.weight": (out, hidden), "output_net.3.bias": (out,)}
    for sfx in ("", "_reverse"):
        shapes |= {f"gru.weight_ih_l0{sfx}": (3 * hidden, hidden), f"gru.weight_hh_l0{sfx}": (3 * hidden, hidden),
                   f"gru.bias_ih_l0{sfx}": (3 * hidden,), f"gru.bias_hh_l0{sfx}": (3 * hidden,)}
    return {prefix + k: v for k, v in shapes.items()}


def t2m_evaluator(mv_hidden: int = 512, mv_out: int = 512, m_hidden: int = 1024, t_hidden: int = 512,
                  out: int = 512) -> dict[str, dict[str, tuple[int, ...]]]:
    """finest.tar's three state dicts (PUBLISHED_ASSETS.md: movement main.0 [512,259,4], main.3 [512,512,4],
    out_net [512,512]; motion input_emb [1024,512], GRU [3072,1024]; text pos_emb [300,15], input_emb [512,300])."""
    return {
        "movement_encoder": {"main.0.weight": (mv_hidden, 259, 4), "main.0.bias": (mv_hidden,),
                             "main.3.weight": (mv_out, mv_hidden, 4), "main.3.bias": (mv_out,),
                             "out_net.weight": (mv_out, mv_out), "out_net.bias": (mv_out,)},
        "motion_encoder": _bigru("", mv_out, m_hidden, out),
        "text_encoder": {"pos_emb.weight": (300, 15), "pos_emb.bias": (300,), **_bigru("", 300, t_hidden, out)},
    }


def spm(d: int = 256, ff: int = 1024, layers: int = 9, nfeats: int = 263, text: int = 1024, n: int = 1,
        max_len: int = 500, time: int = 512) -> dict[str, tuple[int, ...]]:
    """ET's SPM state dict (PUBLISHED_ASSETS.md "ET SPM": 427 tensors; ET GradGuidance/spm.py:134-177)."""
    return {"global_motion_token": (n, d), "global_text_token": (n, d),
            "dist_motion_layer.weight": (2 * d, d), "dist_motion_layer.bias": (2 * d,),
            "dist_text_layer.weight": (2 * d, d), "dist_text_layer.bias": (2 * d,),
            "skel_embedding.weight": (d, nfeats), "skel_embedding.bias": (d,),
            "text_embedding.weight": (d, text), "text_embedding.bias": (d,),
            "final_layer.weight": (nfeats, d), "final_layer.bias": (nfeats,),
            "query_motion_pos_encoder.pe": (max_len, 1, d), "query_text_pos_encoder.pe": (max_len, 1, d),
            "query_pos_decoder.pe": (max_len, 1, d),
            "time_embedding.linear_1.weight": (d, time), "time_embedding.linear_1.bias": (d,),
            "time_embedding.linear_2.weight": (d, d), "time_embedding.linear_2.bias": (d,),
            **skip_stack("motion_encoder.", d, ff, layers), **skip_stack("text_encoder.", d, ff, layers),
            **skip_stack("decoder.", d, ff, layers, decoder=True)}


def shared_spm_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """As saved from the released SPM: one LayerNorm object under both encoders' ``norm`` names."""
    return state | {"text_encoder.norm.weight": state["motion_encoder.norm.weight"],
                    "text_encoder.norm.bias": state["motion_encoder.norm.bias"]}


def _torch_encoder(prefix: str, d: int, ff: int, layers: int) -> dict[str, tuple[int, ...]]:
    out = {}
    for i in range(layers):
        out |= _layer(f"{prefix}layers.{i}.", d, ff, decoder=False)
    return out


def tmr(nfeats: int = 263, text: int = 768, d: int = 256, ff: int = 1024, layers: int = 6):
    """TMR's ``last_weights/{motion_encoder,text_encoder,motion_decoder}.pt`` (TMR src/model/actor.py:36-154,
    configs/model/temos.yaml: ACTORStyleEncoder projection + 2 tokens + nn.TransformerEncoder, PE not saved)."""
    decoder = {}
    for i in range(layers):
        decoder |= _layer(f"seqTransDecoder.layers.{i}.", d, ff, decoder=True)
    return {
        "motion_encoder": {"projection.weight": (d, nfeats), "projection.bias": (d,), "tokens": (2, d),
                           **_torch_encoder("seqTransEncoder.", d, ff, layers)},
        "text_encoder": {"projection.weight": (d, text), "projection.bias": (d,), "tokens": (2, d),
                         **_torch_encoder("seqTransEncoder.", d, ff, layers)},
        "motion_decoder": {**decoder, "final_layer.weight": (nfeats, d), "final_layer.bias": (nfeats,)},
    }
