# Our own script (DiffusersSharp): two LoRAs fused together, as diffusers does it with adapters, for the parity fixture
# tests/DiffusersSharp.Tests/Fixtures/local-diffusers/multi-lora (see its README.md). On tiny-sd15 it
#   1. writes a second LoRA, in the PEFT layout diffusers' save_lora_weights writes (unet.* / text_encoder.* lora_A /
#      lora_B, no alphas), over some of the modules local-diffusers/kohya-lora/sd15.safetensors adapts and some others;
#   2. loads kohya-lora's sd15.safetensors as adapter "kohya" and the new file as adapter "peft" with the pipeline's
#      load_lora_weights, weighs them with set_adapters(["kohya", "peft"], adapter_weights=[0.6, -0.45]) and fuses both
#      with fuse_lora(lora_scale=0.8);
#   3. saves every weight that changed as "delta.<component>.<module>" = weight after - weight before.
# kohya_lora.py's text-encoder stand-in and helpers are reused (see its header and the kohya-lora README).
# Run from the repository root:
#   PYTHONPATH=tools/reference/pyenv:/tmp/refpy:tools/reference/pyenv-peft:tools/reference \
#     /usr/bin/python3 -c "import peft_prelude, runpy; runpy.run_path('tools/reference/multi_lora.py', run_name='__main__')"
import json, os
import torch
from safetensors.torch import save_file
from diffusers import UNet2DConditionModel, AutoencoderKL, EulerDiscreteScheduler
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
import peft
from kohya_lora import TextEncoderStandIn, linear_or_conv

FX = "tests/DiffusersSharp.Tests/Fixtures/"
OUT = FX + "local-diffusers/multi-lora/"
FOLDER = FX + "tiny-sd15/model"
ADAPTER_WEIGHTS = [0.6, -0.45]
LORA_SCALE = 0.8

# (component, module, rank): the first six are adapted by kohya-lora's sd15 file too (its layers at other ranks).
PEFT_LAYERS = [
    ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", 4),
    ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0", 2),
    ("unet", "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k", 8),
    ("unet", "down_blocks.1.attentions.1.transformer_blocks.0.ff.net.2", 4),
    ("text_encoder", "text_model.encoder.layers.0.self_attn.q_proj", 4),
    ("text_encoder", "text_model.encoder.layers.1.mlp.fc1", 2),
    ("unet", "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_v", 4),
    ("unet", "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj", 4),
    ("text_encoder", "text_model.encoder.layers.1.self_attn.out_proj", 4),
]


def peft_file(path, unet, encoder, seed):
    g = torch.Generator("cpu").manual_seed(seed)
    modules = {"unet": linear_or_conv(unet), "text_encoder": linear_or_conv(encoder)}
    sd = {}
    for component, module, rank in PEFT_LAYERS:
        w = modules[component][module].weight
        assert w.dim() == 2, module
        sd[f"{component}.{module}.lora_A.weight"] = torch.randn(rank, w.shape[1], generator=g) * 0.3
        sd[f"{component}.{module}.lora_B.weight"] = torch.randn(w.shape[0], rank, generator=g) * 0.3
    save_file(sd, path)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    unet = UNet2DConditionModel.from_pretrained(FOLDER, subfolder="unet").eval()
    vae = AutoencoderKL.from_pretrained(FOLDER, subfolder="vae").eval()
    sched = EulerDiscreteScheduler.from_pretrained(FOLDER, subfolder="scheduler")
    encoder = TextEncoderStandIn(FOLDER + "/text_encoder")
    models = {"unet": unet, "text_encoder": encoder}
    peft_path = OUT + "peft.safetensors"
    peft_file(peft_path, unet, encoder, 21)
    before = {c: {k: v.clone() for k, v in m.state_dict().items()} for c, m in models.items()}
    pipe = StableDiffusionPipeline(vae=vae, unet=unet, scheduler=sched, text_encoder=encoder, tokenizer=None,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.load_lora_weights(FX + "local-diffusers/kohya-lora/sd15.safetensors", adapter_name="kohya", low_cpu_mem_usage=False)
    pipe.load_lora_weights(peft_path, adapter_name="peft", low_cpu_mem_usage=False)
    pipe.set_adapters(["kohya", "peft"], adapter_weights=ADAPTER_WEIGHTS)
    pipe.fuse_lora(lora_scale=LORA_SCALE, components=list(models), adapter_names=["kohya", "peft"])
    out = {}
    for c, m in models.items():
        for k, v in m.state_dict().items():
            if ".lora_" in k or k.endswith(".alpha"): continue
            base = k.replace(".base_layer.", ".")
            d = v - before[c][base]
            if d.abs().max() > 0:
                assert base.endswith(".weight"), base
                out[f"delta.{c}.{base[:-len('.weight')]}"] = d
    save_file({k: v.contiguous() for k, v in sorted(out.items())}, OUT + "expected.safetensors")
    meta = {"adapters": ["kohya-lora/sd15.safetensors", "peft.safetensors"], "adapter_weights": ADAPTER_WEIGHTS,
            "lora_scale": LORA_SCALE, "changed": len(out),
            "versions": {"diffusers": "0.36.0 (source)", "peft": peft.__version__, "torch": torch.__version__}}
    json.dump(meta, open(OUT + "meta.json", "w"), indent=1)
    print(len(out), "weights changed")
