"""Flux LoRAs in the original (BFL) module layout, as diffusers reads them: writes local-diffusers/flux-lora-layouts/.

Usage, from the repository root (environment: README.md, with pyenv-peft):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy:tools/reference/pyenv-peft /usr/bin/python3 -c \
        "import peft_prelude, runpy; runpy.run_path('tools/reference/flux_lora_layouts.py', run_name='__main__')" \
        tests/DiffusersSharp.Tests/Fixtures

1. mapping.json: how FluxLoraLoaderMixin.lora_state_dict renames and splits the tensors of three full-size (FLUX.1-dev:
   19 double and 38 single blocks, width 3072) rank-2 LoRAs in the original layouts: BFL's control LoRAs
   (FLUX.1-Canny-dev-lora: "double_blocks.0.img_attn.qkv.lora_A.weight", lora_B biases, QK-norm scales), kohya
   sd-scripts ("lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight", with alphas; no CLIP "lora_te1_" layers, which
   diffusers 0.36's Flux converter drops: it keeps only keys starting "lora_unet_" or "lora_te_")
   ComfyUI's kohya variant ("diffusion_model.double_blocks.0...lora_down.weight") and XLabs-AI's x-flux LoRAs
   ("double_blocks.0.processor.qkv_lora1.down.weight") and fal's Kontext LoRAs (BFL names under "base_model.model.").
   Every input element is float64
   and encodes its tensor and position (id * 2^22 + flat index), so each output tensor is decoded back into the input
   rows it was made of: for every output key, its input key and [first row, row count] runs, in order. Alphas equal the
   rank, so diffusers' alpha / rank factors are exactly 1 and cannot hide a row. No tensor of these LoRAs is stored.
2. control.safetensors + expected.safetensors: diffusers' own load_lora_weights of a control LoRA in diffusers' layout
   (x_embedder's lora_A 128 wide on a transformer whose x_embedder takes 64: the weight is zero-padded to 128 and
   in_channels becomes 128; lora_B biases (PEFT lora_bias); QK-norm weights that replace the transformer's), then
   fuse_lora(lora_scale=0.75); a regular LoRA (x_embedder's lora_A 64 wide, zero-padded to 128 by diffusers) on top,
   fuse_lora(lora_scale=1.0); the tiny transformer is local-diffusers/flux's. Stored: the transformer's weights that
   changed after each stage, and FluxControlPipeline (local-diffusers/flux-control's prompt embeddings, VAE and control
   image) on the transformer after both: step latents and image.
"""
import contextlib
import json
import os
import sys
import types

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_flux_control import FluxControlPipeline
import diffusers.loaders.lora_pipeline as lora_pipeline


# torch 1.13 has neither `with torch.device("meta")` nor load_state_dict(assign=True), which diffusers' expansion of
# x_embedder uses: there the Linear is built on the CPU instead of meta and its zero-padded weight copied into it, the
# same values as PyTorch 2's assign. Only lora_pipeline's `torch.device` (used for nothing else in that module) changes.
class _TorchWithDeviceContext(types.ModuleType):
    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def device(name):
        assert name == "meta"
        return contextlib.nullcontext()


lora_pipeline.torch = _TorchWithDeviceContext("torch")
_load_state_dict = torch.nn.Module.load_state_dict
torch.nn.Module.load_state_dict = lambda self, sd, strict=True, assign=False: _load_state_dict(self, sd, strict=strict)

root = sys.argv[1]
OUT = f"{root}/local-diffusers/flux-lora-layouts"
os.makedirs(OUT, exist_ok=True)
SHIFT = 2 ** 22

# ---- 1. Key mapping at full size -------------------------------------------------------------------------------
D, MLP, DOUBLE, SINGLE, R = 3072, 12288, 19, 38, 2
LINEARS = {  # BFL module -> (in, out)
    "time_in.in_layer": (256, D), "time_in.out_layer": (D, D), "vector_in.in_layer": (768, D),
    "vector_in.out_layer": (D, D), "guidance_in.in_layer": (256, D), "guidance_in.out_layer": (D, D),
    "txt_in": (4096, D), "img_in": (128, D), "final_layer.linear": (D, 64), "final_layer.adaLN_modulation.1": (D, 2 * D),
}
for i in range(DOUBLE):
    for s in ("img", "txt"):
        LINEARS.update({f"double_blocks.{i}.{s}_mod.lin": (D, 6 * D), f"double_blocks.{i}.{s}_attn.qkv": (D, 3 * D),
                        f"double_blocks.{i}.{s}_attn.proj": (D, D), f"double_blocks.{i}.{s}_mlp.0": (D, MLP),
                        f"double_blocks.{i}.{s}_mlp.2": (MLP, D)})
for i in range(SINGLE):
    LINEARS.update({f"single_blocks.{i}.modulation.lin": (D, 3 * D), f"single_blocks.{i}.linear1": (D, 3 * D + MLP),
                    f"single_blocks.{i}.linear2": (D + MLP, D)})
NORMS = [f"double_blocks.{i}.{s}_attn.norm.{q}_norm.scale" for i in range(DOUBLE) for s in ("img", "txt")
         for q in ("query", "key")] + [f"single_blocks.{i}.norm.{q}_norm.scale" for i in range(SINGLE) for q in ("query", "key")]


class Encoder:
    def __init__(self):
        self.keys = []

    def __call__(self, key, shape):
        n = 1
        for s in shape:
            n *= s
        self.keys.append(key)
        return (len(self.keys) * SHIFT + torch.arange(n, dtype=torch.float64)).reshape(shape)

    def decode(self, out):
        """{output key: {"source", "shape", "rows": [[first, count], ...]}} from the encoded values."""
        result = {}
        for key, t in sorted(out.items()):
            flat = t.reshape(t.shape[0], -1) if t.dim() > 1 else t.reshape(-1, 1)
            ids = torch.div(flat, SHIFT, rounding_mode="floor")
            assert torch.all(ids == ids[0, 0]), key
            source = self.keys[int(ids[0, 0]) - 1]
            index = flat - ids * SHIFT
            cols = flat.shape[1]
            assert torch.all(index[:, 0] % cols == 0) and torch.all(index - index[:, :1] == torch.arange(cols)), key
            rows = (index[:, 0] / cols).long().tolist()
            runs = []
            for r in rows:
                if runs and runs[-1][0] + runs[-1][1] == r:
                    runs[-1][1] += 1
                else:
                    runs.append([r, 1])
            result[key] = {"source": source, "shape": list(t.shape), "rows": runs}
        return result


def bfl_control():
    enc, sd = Encoder(), {}
    for name, (i, o) in LINEARS.items():
        sd[f"{name}.lora_A.weight"] = enc(f"{name}.lora_A.weight", (R, i))
        sd[f"{name}.lora_B.weight"] = enc(f"{name}.lora_B.weight", (o, R))
        sd[f"{name}.lora_B.bias"] = enc(f"{name}.lora_B.bias", (o,))
    for name in NORMS:
        sd[name] = enc(name, (128,))
    return enc, sd


def kohya(comfy):
    enc, sd = Encoder(), {}
    for name, (i, o) in LINEARS.items():
        if name.startswith(("final_layer", "guidance_in")) and comfy:
            continue  # a ComfyUI file adapting the blocks only
        stem = f"diffusion_model.{name}" if comfy else "lora_unet_" + name.replace(".", "_")
        sd[f"{stem}.lora_down.weight"] = enc(f"{stem}.lora_down.weight", (R, i))
        sd[f"{stem}.lora_up.weight"] = enc(f"{stem}.lora_up.weight", (o, R))
        if not name.startswith("final_layer"):  # diffusers 0.36 refuses final_layer alphas ("Incompatible keys")
            sd[f"{stem}.alpha"] = torch.tensor(float(R), dtype=torch.float64)
    if comfy:  # ComfyUI's CLIP-L part, which diffusers reads as lora_te_ (its kohya "lora_te1_" keys it drops)
        for name, (i, o) in {"self_attn.q_proj": (768, 768), "mlp.fc2": (3072, 768)}.items():
            stem = f"text_encoders.clip_l.transformer.text_model.encoder.layers.{0 if 'q_proj' in name else 11}.{name}"
            sd[f"{stem}.lora_down.weight"] = enc(f"{stem}.lora_down.weight", (R, i))
            sd[f"{stem}.lora_up.weight"] = enc(f"{stem}.lora_up.weight", (o, R))
            sd[f"{stem}.alpha"] = torch.tensor(float(R), dtype=torch.float64)
    return enc, sd


def fal_kontext():
    enc, sd = Encoder(), {}
    for name, (i, o) in LINEARS.items():
        if name.startswith(("time_in", "vector_in", "guidance_in", "txt_in", "img_in", "final_layer.adaLN")):
            continue  # the blocks and final_layer.linear, which diffusers' converter takes
        stem = "base_model.model." + name
        sd[f"{stem}.lora_A.weight"] = enc(f"{stem}.lora_A.weight", (R, i))
        sd[f"{stem}.lora_B.weight"] = enc(f"{stem}.lora_B.weight", (o, R))
    return enc, sd


def xlabs():
    enc, sd = Encoder(), {}
    layers = {}
    for i in range(DOUBLE):
        for n in ("1", "2"):
            layers[f"double_blocks.{i}.processor.qkv_lora{n}"] = (D, 3 * D)
            layers[f"double_blocks.{i}.processor.proj_lora{n}"] = (D, D)
    for i in range(SINGLE):
        layers[f"single_blocks.{i}.processor.qkv_lora"] = (D, 3 * D)
        layers[f"single_blocks.{i}.processor.proj_lora"] = (D + MLP, D)
    for name, (i, o) in layers.items():
        sd[f"{name}.down.weight"] = enc(f"{name}.down.weight", (R, i))
        sd[f"{name}.up.weight"] = enc(f"{name}.up.weight", (o, R))
    return enc, sd


mapping = {}
for label, (enc, sd) in {"bfl_control": bfl_control(), "kohya": kohya(False), "comfyui": kohya(True), "xlabs": xlabs(),
                           "fal_kontext": fal_kontext()}.items():
    converted = FluxControlPipeline.lora_state_dict(dict(sd))
    if isinstance(converted, tuple):
        converted = converted[0]
    mapping[label] = {"inputs": {k: list(v.shape) for k, v in sorted(sd.items())}, "outputs": enc.decode(converted)}
    print(f"{label}: {len(sd)} tensors in, {len(converted)} out")
with open(f"{OUT}/mapping.json", "w") as f:
    json.dump(mapping, f, indent=0, sort_keys=True)
    f.write("\n")

# ---- 2. Control LoRA numerics on the tiny transformer --------------------------------------------------------------
g = torch.Generator("cpu").manual_seed(20261201)


def pair(prefix, i, o, r, bias):
    d = {f"{prefix}.lora_A.weight": torch.randn(r, i, generator=g) * 0.3,
         f"{prefix}.lora_B.weight": torch.randn(o, r, generator=g) * 0.3}
    if bias:
        d[f"{prefix}.lora_B.bias"] = torch.randn(o, generator=g) * 0.2
    return d


control = {}
control.update(pair("transformer.x_embedder", 128, 32, 4, True))
control.update(pair("transformer.context_embedder", 96, 32, 4, True))
control.update(pair("transformer.transformer_blocks.0.attn.to_q", 32, 32, 4, True))
control.update(pair("transformer.transformer_blocks.1.ff.net.0.proj", 32, 128, 4, True))
control.update(pair("transformer.single_transformer_blocks.1.proj_out", 160, 32, 4, True))
control.update(pair("transformer.norm_out.linear", 32, 64, 4, True))
for name in ["transformer_blocks.0.attn.norm_q", "transformer_blocks.0.attn.norm_added_k",
             "single_transformer_blocks.1.attn.norm_k"]:
    control[f"transformer.{name}.weight"] = 1 + 0.3 * torch.randn(16, generator=g)
save_file(control, f"{OUT}/control.safetensors")
regular = {}
regular.update(pair("transformer.x_embedder", 64, 32, 2, False))
regular.update(pair("transformer.single_transformer_blocks.0.attn.to_v", 32, 32, 2, False))
save_file(regular, f"{OUT}/regular.safetensors")

vae = AutoencoderKL.from_pretrained(f"{root}/tiny-sd3/model", subfolder="vae").eval()
scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(f"{root}/local-diffusers/flux", subfolder="scheduler")
fc = load_file(f"{root}/local-diffusers/flux-control/expected.safetensors")
control_image = Image.open(f"{root}/local-diffusers/controlnet/control.png").convert("RGB")
args = dict(prompt_embeds=fc["in.prompt_embeds"], pooled_prompt_embeds=fc["in.pooled"], control_image=control_image,
            height=64, width=64, num_inference_steps=4)
out = {}


def case(name, adapters):
    transformer = FluxTransformer2DModel.from_pretrained(f"{root}/local-diffusers/flux", subfolder="transformer").eval()
    before = transformer.state_dict()
    before = {k: v.clone() for k, v in before.items()}
    pipe = FluxControlPipeline(scheduler=scheduler, vae=vae, transformer=transformer, text_encoder=None, tokenizer=None,
                               text_encoder_2=None, tokenizer_2=None)
    # Loaded and fused, not unloaded: unload_lora_weights() would put the original QK-norm weights back. Several
    # adapters are fused at once (set_adapters' weights as their scales): loading an adapter unmerges fused ones.
    for adapter in adapters:
        pipe.load_lora_weights(f"{OUT}/{adapter}.safetensors", adapter_name=adapter, low_cpu_mem_usage=False)
    pipe.set_adapters(list(adapters), adapter_weights=list(adapters.values()))
    pipe.fuse_lora()
    print(f"{name}: in_channels {transformer.config.in_channels}, x_embedder {list(transformer.x_embedder.base_layer.weight.shape)}")
    for k, v in transformer.state_dict().items():
        if "lora_" in k:
            continue
        key = k.replace(".base_layer", "")
        if before[key].shape != v.shape or not torch.equal(before[key], v):
            out[f"{name}.{key}"] = v.clone()

    def on_step_end(p, i, t, kw):
        out[f"{name}.t2i.step{i}.latents"] = kw["latents"].clone()
        return kw

    with torch.no_grad():
        out[f"{name}.t2i.latents"] = pipe(**args, output_type="latent", callback_on_step_end=on_step_end,
                                          generator=torch.Generator("cpu").manual_seed(42)).images
        out[f"{name}.t2i.image"] = torch.from_numpy(pipe(**args, output_type="np",
                                                         generator=torch.Generator("cpu").manual_seed(42)).images)


case("control", {"control": 0.75})
case("both", {"control": 0.75, "regular": 1.0})
save_file({k: v.contiguous().float() for k, v in sorted(out.items())}, f"{OUT}/expected.safetensors")
print(f"wrote {len(out)} tensors: {', '.join(k for k in sorted(out) if '.step' not in k)}")
