"""Sana, Lumina-Image 2.0, AuraFlow and CogView4 transformer LoRAs loaded and fused by diffusers (v0.39) + PEFT: writes
local-diffusers/sana-lora/, lumina2-lora/, auraflow-lora/ and cogview4-lora/ (each family's files do not depend on the
others': a family's draws use its own seeds).

Usage, from the repository root (environment: README.md, with pyenv-peft; diffusers v0.39.0 and PEFT / accelerate in
/tmp/refpy39):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39:tools/reference/pyenv-peft:tools/reference /usr/bin/python3 -c \
        "import peft_prelude, runpy; runpy.run_path('tools/reference/sana_lumina2_auraflow_lora.py', run_name='__main__')"

For each family, on the tiny transformer of local-diffusers/<family> (SanaLoraLoaderMixin, Lumina2LoraLoaderMixin,
AuraFlowLoraLoaderMixin, CogView4LoraLoaderMixin), each file is loaded into a fresh transformer with the pipeline's load_lora_weights and fused with
fuse_lora(lora_scale=s); every weight that changed is saved as "<case>.delta.transformer.<parameter>" = after - before:
- peft (s 0.7): PEFT's LoraConfig (r 4, lora_alpha 8, a rank_pattern and an alpha_pattern) on every Linear, lora_A /
  lora_B drawn at random, written by the pipeline's save_lora_weights: diffusers' own layout with adapter metadata.
- nometa (s 1.3): "transformer.<module>.lora_A.weight" / "lora_B.weight" written with save_file, mixed ranks (Sana's
  with its 1x1 conv_inverted, a conv LoRA), no metadata: PEFT's lora_alpha is then the rank of the first lora_B diffusers reads, for every layer.
Lumina2 also reads Lumina's original training layout ("diffusion_model.layers.0.attention.qkv.lora_A.weight", ...) with
_convert_non_diffusers_lumina2_lora_to_diffusers, which splits the fused qkv's lora_B at the hard-coded sizes 2304 / 768 /
768 of Lumina-Image-2.0; it raises on any other width. So that case ("original", s 0.6) runs on a full-width transformer
(hidden 2304, 24 heads, 8 key / value heads, the real adaLN widths) cut down to one block of each kind and a 16-wide
feed-forward, every weight zero (so a delta is exactly what the fuse added); its config is written to
lumina2-lora/wide/config.json and, the deltas being large, "original.delta.transformer.<parameter>.head" / ".tail" hold
their first and last 16 x 16 corners.
The script also checks what diffusers refuses or loads nothing from (see the checks at the end).
"""
import json
import os

import torch
from peft import LoraConfig
from safetensors.torch import save_file

import lora_reference

from diffusers import AuraFlowTransformer2DModel, CogView4Transformer2DModel, Lumina2Transformer2DModel, SanaTransformer2DModel
from diffusers.pipelines.aura_flow.pipeline_aura_flow import AuraFlowPipeline
from diffusers.pipelines.cogview4.pipeline_cogview4 import CogView4Pipeline
from diffusers.pipelines.lumina2.pipeline_lumina2 import Lumina2Pipeline
from diffusers.pipelines.sana.pipeline_sana import SanaPipeline

ROOT = "tests/DiffusersSharp.Tests/Fixtures/local-diffusers/"

FAMILIES = {
    # family: (transformer class, pipeline class, rank_pattern, alpha_pattern, nometa modules and ranks)
    "sana": (SanaTransformer2DModel, SanaPipeline,
             {"transformer_blocks.0.attn1.to_q": 2, "transformer_blocks.1.attn2.to_v": 8},
             {"transformer_blocks.1.attn2.to_out.0": 1, "caption_projection.linear_1": 3},
             [("transformer_blocks.1.attn2.to_k", 2), ("transformer_blocks.0.attn1.to_out.0", 4), ("proj_out", 4),
              ("time_embed.emb.timestep_embedder.linear_2", 2), ("transformer_blocks.0.ff.conv_inverted", 2)]),
    "lumina2": (Lumina2Transformer2DModel, Lumina2Pipeline,
                {"layers.0.attn.to_q": 2, "noise_refiner.0.feed_forward.linear_2": 8},
                {"context_refiner.0.attn.to_out.0": 1, "time_caption_embed.caption_embedder.1": 3},
                [("layers.1.attn.to_k", 2), ("noise_refiner.0.attn.to_out.0", 4), ("context_refiner.0.feed_forward.linear_3", 4),
                 ("layers.0.norm1.linear", 2)]),
    "auraflow": (AuraFlowTransformer2DModel, AuraFlowPipeline,
                 {"joint_transformer_blocks.0.attn.to_q": 2, "single_transformer_blocks.1.ff.linear_2": 8},
                 {"joint_transformer_blocks.0.attn.add_k_proj": 1, "time_step_proj.linear_1": 3},
                 [("single_transformer_blocks.0.attn.to_k", 2), ("joint_transformer_blocks.0.attn.to_add_out", 4),
                  ("context_embedder", 4), ("norm_out.linear", 2)]),
    "cogview4": (CogView4Transformer2DModel, CogView4Pipeline,
                 {"transformer_blocks.0.attn1.to_q": 2, "transformer_blocks.1.ff.net.2": 8},
                 {"transformer_blocks.0.norm1.linear": 1, "time_condition_embed.condition_embedder.linear_1": 3},
                 [("transformer_blocks.1.attn1.to_k", 2), ("transformer_blocks.0.attn1.to_out.0", 4), ("patch_embed.text_proj", 4),
                  ("norm_out.linear", 2)]),
}


def pipeline(cls, transformer):
    kwargs = {"transformer": transformer, "scheduler": None, "vae": None, "text_encoder": None, "tokenizer": None}
    return cls(**kwargs)


def random_pairs(modules, linears, seed, prefix, a_suffix=".lora_A.weight", b_suffix=".lora_B.weight"):
    g = torch.Generator("cpu").manual_seed(seed)
    sd = {}
    for module, rank in modules:
        w = linears[module].weight
        # A conv (Sana's 1x1 conv_inverted) takes [r, in, kh, kw] and [out, r, 1, 1], as PEFT's conv LoRA.
        sd[f"{prefix}{module}{a_suffix}"] = torch.randn(rank, *w.shape[1:], generator=g) * 0.3
        sd[f"{prefix}{module}{b_suffix}"] = torch.randn(w.shape[0], rank, *([1] * (w.dim() - 2)), generator=g) * 0.3
    return sd


counts = {}
for seed_base, (family, (tcls, pcls, rank_pattern, alpha_pattern, nometa)) in zip((20261201, 20261211, 20261221, 20261231), FAMILIES.items()):
    out = f"{ROOT}{family}-lora/"
    os.makedirs(out, exist_ok=True)

    def transformer():
        return tcls.from_pretrained(ROOT + family, subfolder="transformer").eval()

    def fused(case, path, scale):
        return lora_reference.fused_deltas(case, path, scale, pipeline(pcls, transformer()))

    expected = {}
    model = transformer()
    names = sorted(lora_reference.linears(model))
    for k in list(rank_pattern) + list(alpha_pattern): assert k in names, (family, k)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=names, init_lora_weights=False, rank_pattern=rank_pattern, alpha_pattern=alpha_pattern)
    path, n = lora_reference.save_random_peft_lora(pcls, out, model, config, seed=seed_base)
    expected.update(fused("peft", path, 0.7))

    fresh = transformer()
    linears = {n: m for n, m in fresh.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
    save_file(random_pairs(nometa, linears, seed_base + 1, "transformer."), out + "no_metadata.safetensors")
    expected.update(fused("nometa", out + "no_metadata.safetensors", 1.3))

    if family == "lumina2":
        # Lumina's original layout on a full-width transformer (the converter's split is Lumina-Image-2.0's).
        wide = Lumina2Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, hidden_size=2304, num_layers=1, num_refiner_layers=1,
                                         num_attention_heads=24, num_kv_heads=8, multiple_of=16, ffn_dim_multiplier=0.002, norm_eps=1e-5,
                                         scaling_factor=1.0, axes_dim_rope=(32, 32, 32), axes_lens=(300, 512, 512), cap_feat_dim=32).eval()
        with torch.no_grad():
            for p in wide.parameters(): p.zero_()
        wide.save_config(out + "wide")
        wl = lora_reference.linears(wide)
        g = torch.Generator("cpu").manual_seed(seed_base + 2)
        sd = {}
        for block, modulation in (("noise_refiner.0", True), ("context_refiner.0", False), ("layers.0", True)):
            parts = [("attention.qkv", 4, 2304, 3840), ("attention.out", 2, 2304, 2304),
                     ("feed_forward.w1", 2, 2304, wl[f"{block}.feed_forward.linear_1"].weight.shape[0]),
                     ("feed_forward.w2", 4, wl[f"{block}.feed_forward.linear_2"].weight.shape[1], 2304),
                     ("feed_forward.w3", 2, 2304, wl[f"{block}.feed_forward.linear_3"].weight.shape[0])]
            if modulation: parts.append(("adaLN_modulation.1", 2, 1024, 4 * 2304))
            for name, rank, fan_in, fan_out in parts:
                sd[f"diffusion_model.{block}.{name}.lora_A.weight"] = torch.randn(rank, fan_in, generator=g) * 0.3
                sd[f"diffusion_model.{block}.{name}.lora_B.weight"] = torch.randn(fan_out, rank, generator=g) * 0.3
        save_file(sd, out + "original.safetensors")
        before = {k: v.clone() for k, v in wide.state_dict().items()}
        p = pipeline(pcls, wide)
        p.load_lora_weights(out + "original.safetensors", low_cpu_mem_usage=False)
        p.fuse_lora(lora_scale=0.6)
        p.unload_lora_weights()
        after = wide.state_dict()
        changed = [k for k in before if not torch.equal(after[k], before[k])]
        for k in changed:
            d = after[k] - before[k]
            expected[f"original.delta.transformer.{k}.head"] = d[:16, :16].clone()
            expected[f"original.delta.transformer.{k}.tail"] = d[-16:, -16:].clone()
        counts["lumina2 original"] = len(changed)
        del wide, before, after

        # The converter raises on another qkv width (torch.split's sizes must add up to lora_B's rows).
        small = {k.replace("diffusion_model.", "diffusion_model."): v for k, v in sd.items() if k.startswith("diffusion_model.layers.0.")}
        small["diffusion_model.layers.0.attention.qkv.lora_B.weight"] = torch.zeros(96, 4)
        try:
            Lumina2Pipeline.lora_state_dict(small)
            raise SystemExit("diffusers split a 96-row qkv: update this script and the C# refusal")
        except RuntimeError as e:
            assert "split" in str(e) or "sum" in str(e), e
        # ... and on a block without all its parts.
        partial = {k: v for k, v in sd.items() if k.startswith("diffusion_model.layers.0.") and ".w3." not in k}
        try:
            Lumina2Pipeline.lora_state_dict(partial)
            raise SystemExit("diffusers converted a block without w3")
        except KeyError:
            pass

    # diffusers raises on a key without "lora" (an .alpha beside diffusers' own keys).
    sd = random_pairs(nometa[:1], linears, 1, "transformer.")
    sd[f"transformer.{nometa[0][0]}.alpha"] = torch.tensor(2.0)
    save_file(sd, "/tmp/alpha.safetensors")
    try:
        pipeline(pcls, transformer()).load_lora_weights("/tmp/alpha.safetensors")
        raise SystemExit(f"{family}: diffusers loaded an .alpha tensor")
    except ValueError as e:
        assert "lora" in str(e), e
    # ... and loads nothing from PEFT's base_model.model. keys (no "transformer." prefix).
    save_file(random_pairs(nometa[:1], linears, 1, "base_model.model."), "/tmp/peftprefix.safetensors")
    p = pipeline(pcls, transformer())
    p.load_lora_weights("/tmp/peftprefix.safetensors")
    assert not getattr(p.transformer, "peft_config", None), f"{family}: diffusers loaded base_model.model. keys"

    save_file({k: v.contiguous() for k, v in sorted(expected.items())}, out + "expected.safetensors")
    for c in ("peft", "nometa"): counts[f"{family} {c}"] = sum(k.startswith(c + ".") for k in expected)
    counts[f"{family} linears"] = len(names)
print(json.dumps(counts))
