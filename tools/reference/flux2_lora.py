"""FLUX.2 transformer LoRAs written, loaded and fused by diffusers (v0.39) + PEFT: writes local-diffusers/flux2-lora/.

Usage, from the repository root (environment: README.md, with pyenv-peft; diffusers v0.39.0 and PEFT / accelerate in
/tmp/refpy39):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39:tools/reference/pyenv-peft:tools/reference /usr/bin/python3 -c \
        "import peft_prelude, runpy; runpy.run_path('tools/reference/flux2_lora.py', run_name='__main__')"

On local-diffusers/flux2-klein's tiny Flux2Transformer2DModel (Flux2KleinPipeline's loader is Flux2LoraLoaderMixin),
each file is loaded into a fresh transformer with Flux2KleinPipeline.load_lora_weights and fused with
fuse_lora(lora_scale=s); every weight that changed is saved as "<case>.delta.transformer.<parameter>" = after - before:
- peft (s 0.7): PEFT's LoraConfig (r 4, lora_alpha 8, rank and alpha patterns) on every Linear, lora_A / lora_B drawn at
  random, written by Flux2KleinPipeline.save_lora_weights with its adapter metadata: diffusers' own layout.
- nometa (s 1.0): diffusers' own layout, no metadata, ranks 2 then 4 (diffusers' default alpha: the first lora_B's rank).
- bfl (s 0.8): ai-toolkit's "diffusion_model." + BFL names: fused double-block qkv (lora_A shared, lora_B split in three),
  proj, mlp, single-block linear1 / linear2, the top-level modules and modulations, ranks 2 and 4.
- expanded (s 1.2): "diffusion_model." + diffusers' own block names (transformer_blocks, single_transformer_blocks and the
  "sformer_blocks" alias) beside BFL ones.
- peftbfl (s 1.0): BFL names under PEFT's "base_model.model." prefix.
- kohya (s 0.9): kohya's "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight" names with alphas (one missing),
  a fused qkv split densely, a block-sparse one (rank 6 -> three rank-2 pairs), single blocks and top-level modules.
Then the layouts diffusers refuses or loads nothing from are tried, and what diffusers does is printed (README.md).
"""
import os

import torch
from peft import LoraConfig
from safetensors.torch import save_file

import lora_reference

from diffusers import Flux2KleinPipeline, Flux2Transformer2DModel

ROOT = "tests/DiffusersSharp.Tests/Fixtures/local-diffusers/"
OUT = ROOT + "flux2-lora/"
os.makedirs(OUT, exist_ok=True)


def transformer():
    return Flux2Transformer2DModel.from_pretrained(ROOT + "flux2-klein", subfolder="transformer").eval()


def pipeline(model):
    return Flux2KleinPipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None, transformer=model)


def fused_deltas(case, path, scale):
    deltas = lora_reference.fused_deltas(case, path, scale, pipeline(transformer()))
    print(f"{case}: {len(deltas)} weights changed")
    return deltas


expected = {}

# 1. diffusers' own layout, through save_lora_weights.
model = transformer()
names = sorted(lora_reference.linears(model))
config = LoraConfig(r=4, lora_alpha=8, target_modules=names, init_lora_weights=False,
                    rank_pattern={"transformer_blocks.0.attn.to_q": 2, "single_transformer_blocks.1.attn.to_qkv_mlp_proj": 8},
                    alpha_pattern={"transformer_blocks.1.attn.to_add_out": 1, "context_embedder": 3})
path, peft_tensors = lora_reference.save_random_peft_lora(Flux2KleinPipeline, OUT, model, config, seed=20261211)
expected.update(fused_deltas("peft", path, 0.7))

base = lora_reference.linears(transformer())


def pair(g, module, rank, outputs=None):
    w = base[module].weight
    return torch.randn(rank, w.shape[1], generator=g) * 0.3, torch.randn(outputs or w.shape[0], rank, generator=g) * 0.3


# 2. diffusers' own layout without metadata: the first lora_B's rank (2) is every layer's alpha.
g = torch.Generator("cpu").manual_seed(20261212)
sd = {}
for module, rank in [("transformer_blocks.1.attn.to_k", 2), ("single_transformer_blocks.0.attn.to_out", 4), ("x_embedder", 4),
                     ("transformer_blocks.0.ff_context.linear_out", 2)]:
    a, b = pair(g, module, rank)
    sd[f"transformer.{module}.lora_A.weight"], sd[f"transformer.{module}.lora_B.weight"] = a, b
save_file(sd, OUT + "nometa.safetensors")
expected.update(fused_deltas("nometa", OUT + "nometa.safetensors", 1.0))

# 3. ai-toolkit's diffusion_model. + BFL names. Single blocks come first in the converted dict, so the first lora_B is
# single_blocks.0.linear1's (rank 2), every layer's alpha.
inner = 2 * 16  # heads x head dim
BFL = [("single_blocks.0.linear1", "single_transformer_blocks.0.attn.to_qkv_mlp_proj", 2, None),
       ("single_blocks.1.linear2", "single_transformer_blocks.1.attn.to_out", 4, None),
       ("double_blocks.0.img_attn.qkv", "transformer_blocks.0.attn.to_q", 4, 3 * inner),
       ("double_blocks.1.txt_attn.qkv", "transformer_blocks.1.attn.add_q_proj", 2, 3 * inner),
       ("double_blocks.0.img_attn.proj", "transformer_blocks.0.attn.to_out.0", 4, None),
       ("double_blocks.1.txt_attn.proj", "transformer_blocks.1.attn.to_add_out", 2, None),
       ("double_blocks.0.img_mlp.0", "transformer_blocks.0.ff.linear_in", 4, None),
       ("double_blocks.1.img_mlp.2", "transformer_blocks.1.ff.linear_out", 4, None),
       ("double_blocks.0.txt_mlp.0", "transformer_blocks.0.ff_context.linear_in", 2, None),
       ("double_blocks.0.txt_mlp.2", "transformer_blocks.0.ff_context.linear_out", 4, None),
       ("img_in", "x_embedder", 4, None), ("txt_in", "context_embedder", 2, None),
       ("time_in.in_layer", "time_guidance_embed.timestep_embedder.linear_1", 4, None),
       ("time_in.out_layer", "time_guidance_embed.timestep_embedder.linear_2", 2, None),
       ("final_layer.linear", "proj_out", 4, None), ("final_layer.adaLN_modulation.1", "norm_out.linear", 2, None),
       ("single_stream_modulation.lin", "single_stream_modulation.linear", 4, None),
       ("double_stream_modulation_img.lin", "double_stream_modulation_img.linear", 2, None),
       ("double_stream_modulation_txt.lin", "double_stream_modulation_txt.linear", 4, None)]


def bfl_file(entries, seed, prefix):
    g = torch.Generator("cpu").manual_seed(seed)
    sd = {}
    for name, module, rank, outputs in entries:
        a, b = pair(g, module, rank, outputs)
        sd[f"{prefix}{name}.lora_A.weight"], sd[f"{prefix}{name}.lora_B.weight"] = a, b
    return sd


save_file(bfl_file(BFL, 20261213, "diffusion_model."), OUT + "bfl.safetensors")
expected.update(fused_deltas("bfl", OUT + "bfl.safetensors", 0.8))

# 4. diffusers' block names under diffusion_model. (kept as they are; sformer_blocks is transformer_blocks), beside BFL
# ones; the expanded keys come first in the converted dict (the first lora_B, by file order: sformer_blocks.1's, rank 4).
EXPANDED = [("sformer_blocks.1.attn.to_v", "transformer_blocks.1.attn.to_v", 4, None),
            ("single_transformer_blocks.1.attn.to_qkv_mlp_proj", "single_transformer_blocks.1.attn.to_qkv_mlp_proj", 2, None),
            ("transformer_blocks.0.attn.add_k_proj", "transformer_blocks.0.attn.add_k_proj", 2, None),
            ("double_blocks.0.img_attn.qkv", "transformer_blocks.0.attn.to_q", 2, 3 * inner)]
save_file(bfl_file(EXPANDED, 20261214, "diffusion_model."), OUT + "expanded.safetensors")
expected.update(fused_deltas("expanded", OUT + "expanded.safetensors", 1.2))

# 5. PEFT's base_model.model. prefix on BFL names.
PEFTBFL = [("double_blocks.1.img_attn.qkv", "transformer_blocks.1.attn.to_q", 4, 3 * inner),
           ("single_blocks.1.linear1", "single_transformer_blocks.1.attn.to_qkv_mlp_proj", 4, None),
           ("final_layer.linear", "proj_out", 4, None)]
save_file(bfl_file(PEFTBFL, 20261215, "base_model.model."), OUT + "peft_bfl.safetensors")
expected.update(fused_deltas("peftbfl", OUT + "peft_bfl.safetensors", 1.0))

# 6. kohya's names: lora_down / lora_up / alpha, alpha / r baked in by the converter, one alpha missing (the rank then).
g = torch.Generator("cpu").manual_seed(20261216)
sd = {}


def kohya(name, module, rank, alpha, outputs=None, sparse=False):
    a, b = pair(g, module, rank, outputs)
    if sparse:  # three rank-(r/3) pairs written as one block-diagonal up
        mask = torch.zeros_like(b)
        for j in range(3):
            mask[j * inner:(j + 1) * inner, j * (rank // 3):(j + 1) * (rank // 3)] = 1
        b = b * mask
    sd[f"lora_unet_{name}.lora_down.weight"], sd[f"lora_unet_{name}.lora_up.weight"] = a, b
    if alpha is not None:
        sd[f"lora_unet_{name}.alpha"] = torch.tensor(alpha)


kohya("double_blocks_0_img_attn_proj", "transformer_blocks.0.attn.to_out.0", 4, 2.0)
kohya("double_blocks_0_img_attn_qkv", "transformer_blocks.0.attn.to_q", 4, 8.0, 3 * inner)
kohya("double_blocks_1_txt_attn_qkv", "transformer_blocks.1.attn.add_q_proj", 6, 3.0, 3 * inner, sparse=True)
kohya("double_blocks_1_txt_attn_proj", "transformer_blocks.1.attn.to_add_out", 2, None)
kohya("double_blocks_1_img_mlp_0", "transformer_blocks.1.ff.linear_in", 4, 1.0)
kohya("double_blocks_0_txt_mlp_2", "transformer_blocks.0.ff_context.linear_out", 2, 4.0)
kohya("single_blocks_0_linear1", "single_transformer_blocks.0.attn.to_qkv_mlp_proj", 4, 4.0)
kohya("single_blocks_1_linear2", "single_transformer_blocks.1.attn.to_out", 2, 1.0)
kohya("img_in", "x_embedder", 4, 2.0)
kohya("txt_in", "context_embedder", 2, 2.0)
kohya("time_in_in_layer", "time_guidance_embed.timestep_embedder.linear_1", 4, 8.0)
kohya("time_in_out_layer", "time_guidance_embed.timestep_embedder.linear_2", 2, 1.0)
kohya("final_layer_linear", "proj_out", 4, 4.0)
save_file(sd, OUT + "kohya.safetensors")
expected.update(fused_deltas("kohya", OUT + "kohya.safetensors", 0.9))

save_file({k: v.contiguous() for k, v in sorted(expected.items())}, OUT + "expected.safetensors")
print(f"{peft_tensors} PEFT tensors on {len(names)} Linear layers; {len(expected)} deltas")


# What diffusers does with the layouts it does not read (written to /tmp only; the tests write their own).
def attempt(case, sd):
    path = f"/tmp/flux2_lora_{case}.safetensors"
    save_file(sd, path)
    fresh = transformer()
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    try:
        pipe = pipeline(fresh)
        pipe.load_lora_weights(path, low_cpu_mem_usage=False)
        pipe.fuse_lora(lora_scale=1.0)
        pipe.unload_lora_weights()
    except Exception as e:  # noqa: BLE001 - printing what diffusers raises is the point
        print(f"refused {case}: {type(e).__name__}: {str(e)[:200]}")
        return
    changed = [k for k in before if not torch.equal(fresh.state_dict()[k], before[k])]
    print(f"loaded {case}: {len(changed)} weights changed")


g = torch.Generator("cpu").manual_seed(1)
a, b = pair(g, "transformer_blocks.0.attn.to_out.0", 2)
attempt("bfl_alpha", {"diffusion_model.double_blocks.0.img_attn.proj.lora_A.weight": a,
                      "diffusion_model.double_blocks.0.img_attn.proj.lora_B.weight": b,
                      "diffusion_model.double_blocks.0.img_attn.proj.alpha": torch.tensor(2.0)})
attempt("bfl_unmapped", {"diffusion_model.double_blocks.0.img_attn.proj.lora_A.weight": a,
                         "diffusion_model.double_blocks.0.img_attn.proj.lora_B.weight": b,
                         "diffusion_model.double_blocks.0.img_mod.lin.lora_A.weight": a})
attempt("bfl_default", {"diffusion_model.double_blocks.0.img_attn.proj.lora_A.default.weight": a,
                        "diffusion_model.double_blocks.0.img_attn.proj.lora_B.default.weight": b})
attempt("comfy_down", {"diffusion_model.double_blocks.0.img_attn.proj.lora_down.weight": a,
                       "diffusion_model.double_blocks.0.img_attn.proj.lora_up.weight": b})
attempt("diffusers_alpha", {"transformer.transformer_blocks.0.attn.to_out.0.lora_A.weight": a,
                            "transformer.transformer_blocks.0.attn.to_out.0.lora_B.weight": b,
                            "transformer.transformer_blocks.0.attn.to_out.0.alpha": torch.tensor(2.0)})
attempt("diffusers_default", {"transformer.transformer_blocks.0.attn.to_out.0.lora_A.default.weight": a,
                              "transformer.transformer_blocks.0.attn.to_out.0.lora_B.default.weight": b})
attempt("kohya_unmapped", {"lora_unet_double_blocks_0_img_attn_proj.lora_down.weight": a,
                           "lora_unet_double_blocks_0_img_attn_proj.lora_up.weight": b,
                           "lora_unet_double_blocks_0_img_mod_lin.lora_down.weight": a})
attempt("kohya_no_up", {"lora_unet_double_blocks_0_img_attn_proj.lora_down.weight": a})
attempt("bare_bfl", {"double_blocks.0.img_attn.proj.lora_A.weight": a, "double_blocks.0.img_attn.proj.lora_B.weight": b})
