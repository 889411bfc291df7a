# Our own script (DiffusersSharp): kohya sd-scripts format LoRAs run through diffusers' OWN loader and PEFT's own
# LoRA layers, to make the parity fixture tests/DiffusersSharp.Tests/Fixtures/local-diffusers/kohya-lora (see its
# README.md). For tiny-sdxl (SGM block names, lora_te1_ / lora_te2_) and tiny-sd15 (diffusers names, lora_te_) it
#   1. writes a kohya file with random lora_down / lora_up / alpha tensors (ranks and alphas vary per layer);
#   2. loads it with the pipeline's load_lora_weights (lora_state_dict: _maybe_map_sgm_blocks_to_diffusers,
#      _convert_non_diffusers_lora_to_diffusers; load_lora_into_unet / _load_lora_into_text_encoder: rank and
#      network-alpha handling, LoraConfig, PEFT injection) and fuse_lora(lora_scale=0.7);
#   3. saves every weight that changed as "delta.<component>.<module>" = weight after - weight before, and, per kohya
#      layer, the module diffusers' converter names for it (meta.json; null where it names no module of the model).
# transformers is a stub in the scratch environment, so the CLIP text encoders are stand-ins with the same module
# paths and Linear layers, holding the fixture's real weights, whose load_adapter does what transformers'
# PeftAdapterMixin.load_adapter does (inject_adapter_in_model + set_peft_model_state_dict). The UNets are diffusers'.
# Run from the repository root:
#   PYTHONPATH=tools/reference/pyenv:/tmp/refpy:tools/reference/pyenv-peft \
#     /usr/bin/python3 -c "import peft_prelude, runpy; runpy.run_path('tools/reference/kohya_lora.py', run_name='__main__')"
# (/tmp/refpy: diffusers, huggingface_hub, peft and accelerate source, see README.md; peft_prelude lets PEFT v0.18.0 and
# accelerate v1.11.0 import on torch 1.13.)
import json, logging, os, struct
import torch, torch.nn as nn
import transformers
from safetensors.torch import load_file, save_file
from diffusers import UNet2DConditionModel, AutoencoderKL, EulerDiscreteScheduler
from diffusers.utils import USE_PEFT_BACKEND
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import StableDiffusionXLPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from diffusers.loaders.lora_conversion_utils import _maybe_map_sgm_blocks_to_diffusers, _convert_non_diffusers_lora_to_diffusers
from diffusers.utils.state_dict_utils import StateDictType, convert_unet_state_dict_to_peft, convert_state_dict_to_diffusers, convert_state_dict_to_peft
import peft
from peft import inject_adapter_in_model
from peft.utils import set_peft_model_state_dict

assert USE_PEFT_BACKEND, "diffusers must see PEFT"
FX = "tests/DiffusersSharp.Tests/Fixtures/"
OUT = FX + "local-diffusers/kohya-lora/"
os.makedirs(OUT, exist_ok=True)
LORA_SCALE = 0.7
logging.getLogger("diffusers").setLevel(logging.WARNING)


class TextEncoderStandIn(transformers.PreTrainedModel, nn.Module):
    """A CLIP text model's module tree (Linear where CLIP has Linear) with the folder's weights; no forward."""
    LINEAR = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "text_projection")

    def __init__(self, folder):
        nn.Module.__init__(self)
        sd = load_file(folder + "/model.safetensors")
        # transformers 4.x module paths (text_model.*), which diffusers v0.36's converter writes; the fixture's files
        # were saved by transformers 5 without that prefix for CLIPTextModel.
        sd = {(k if k.startswith(("text_model.", "text_projection.")) else "text_model." + k): v for k, v in sd.items()}
        for key, value in sd.items():
            path, leaf = key.rsplit(".", 1)
            parent = self
            parts = path.split(".")
            for i, part in enumerate(parts):
                if not hasattr(parent, part) or getattr(parent, part) is None:
                    last = i == len(parts) - 1
                    if last and part in self.LINEAR:
                        w = sd[path + ".weight"]
                        parent.add_module(part, nn.Linear(w.shape[1], w.shape[0], bias=(path + ".bias") in sd))
                    else:
                        parent.add_module(part, nn.Module())
                parent = getattr(parent, part)
            if not isinstance(parent, nn.Linear):
                parent.register_parameter(leaf, nn.Parameter(value.clone(), requires_grad=False))
        missing, unexpected = self.load_state_dict(sd, strict=False)
        assert not missing and not unexpected, (missing, unexpected)
        self.requires_grad_(False)

    @property
    def device(self): return torch.device("cpu")

    @property
    def dtype(self): return torch.float32

    def load_adapter(self, adapter_name=None, adapter_state_dict=None, peft_config=None, **kwargs):
        # transformers' PeftAdapterMixin.load_adapter with an adapter_state_dict and a peft_config.
        inject_adapter_in_model(peft_config, self, adapter_name)
        sd = {k.removeprefix("base_model.model."): v for k, v in adapter_state_dict.items()}
        incompatible = set_peft_model_state_dict(self, sd, adapter_name)
        unexpected = getattr(incompatible, "unexpected_keys", None)
        if unexpected: print("  text encoder: unexpected keys (not loaded):", unexpected)


def save_kohya(sd, path):
    """safetensors with 0-dim alphas, as sd-scripts writes them (the scratch shim cannot write 0-dim tensors)."""
    header, blobs, offset = {}, [], 0
    for k in sorted(sd):
        b = sd[k].contiguous().reshape(-1).numpy().astype("<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(sd[k].shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b); offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def linear_or_conv(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def kohya_file(path, layers, unet, encoders, seed):
    """layers: (kohya layer name, diffusers module path for the shape, component, rank, alpha)."""
    g = torch.Generator("cpu").manual_seed(seed)
    modules = {"unet": linear_or_conv(unet), **{c: linear_or_conv(m) for c, m in encoders.items()}}
    sd = {}
    for name, module, component, rank, alpha in layers:
        w = modules[component][module].weight
        down_shape = (rank, *w.shape[1:])
        up_shape = (w.shape[0], rank) + ((1, 1) if w.dim() == 4 else ())
        sd[name + ".lora_down.weight"] = torch.randn(down_shape, generator=g) * 0.3
        sd[name + ".lora_up.weight"] = torch.randn(up_shape, generator=g) * 0.3
        sd[name + ".alpha"] = torch.tensor(float(alpha))
    save_kohya(sd, path)
    return sd


def diffusers_module_of(layer, tensors, unet_config, models):
    """The module diffusers' converter names for one kohya layer (null if no Linear/Conv2d of that name). A text encoder
    part of a whole file has to_out_lora keys, so diffusers takes it as DIFFUSERS_OLD; one key alone is told the same."""
    sd = {k: v for k, v in tensors.items() if k.split(".")[0] == layer}
    sd = _maybe_map_sgm_blocks_to_diffusers(dict(sd), unet_config)
    converted, _ = _convert_non_diffusers_lora_to_diffusers(dict(sd))
    key = next(k for k in converted if ".down." in k or "lora_A" in k)
    component, rest = key.split(".", 1)
    peft_sd = convert_unet_state_dict_to_peft({rest: 0}) if component == "unet" else convert_state_dict_to_peft(convert_state_dict_to_diffusers({rest: 0}, original_type=StateDictType.DIFFUSERS_OLD))
    module = next(iter(peft_sd)).split(".lora_A")[0]
    return component, (module if module in linear_or_conv(models[component]) else None), rest


def run(name, pipe_cls, folder, unet_subfolder, encoders, layers, seed, extra):
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder=unet_subfolder).eval()
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae").eval()
    sched = EulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler")
    tes = {c: TextEncoderStandIn(f"{folder}/{c}") for c in encoders}
    models = {"unet": unet, **tes}
    path = OUT + f"{name}.safetensors"
    tensors = kohya_file(path, layers, unet, tes, seed)
    mapping = {}
    for layer in sorted({k.split(".")[0] for k in tensors}):
        component, module, converted = diffusers_module_of(layer, tensors, unet.config, models)
        mapping[layer] = {"component": component, "module": module, "converted_key": converted}
    before = {c: {k: v.clone() for k, v in m.state_dict().items()} for c, m in models.items()}
    pipe = pipe_cls(vae=vae, unet=unet, scheduler=sched, **extra(tes))
    pipe.load_lora_weights(path, low_cpu_mem_usage=False)  # True needs torch 2 (load_state_dict(assign=True))
    pipe.fuse_lora(lora_scale=LORA_SCALE, components=list(models))
    out = {}
    for c, m in models.items():
        for k, v in m.state_dict().items():
            if ".lora_" in k or k.endswith(".alpha"): continue
            base = k.replace(".base_layer.", ".")
            d = v - before[c][base]
            if d.abs().max() > 0:
                assert base.endswith(".weight"), base
                out[f"delta.{c}.{base[:-len('.weight')]}"] = d
    # PEFT's effective scaling per adapted module (lora_alpha / r after rank_pattern / alpha_pattern; x lora_scale).
    scaling = {}
    for c, m in models.items():
        for n, mod in m.named_modules():
            if isinstance(mod, peft.tuners.lora.LoraLayer):
                a = next(iter(mod.scaling))
                scaling[f"{c}.{n}"] = {"r": mod.r[a], "lora_alpha": mod.lora_alpha[a], "scaling": mod.scaling[a]}
    save_file({k: v.contiguous() for k, v in out.items()}, OUT + f"{name}.expected.safetensors")
    print(name, len(tensors) // 3, "kohya layers,", len(out), "weights changed,",
          sum(1 for v in mapping.values() if v["module"] is None), "layers diffusers maps to no module")
    return {"lora_scale": LORA_SCALE, "layers": mapping, "peft_scaling": scaling}


def te_layers(prefix, component, n_layers, extra=()):
    rows = []
    ranks = [4, 4, 2, 4, 8, 4]
    alphas = [2.0, 1.0, 2.0, 3.0, 2.0, 16.0]   # used for mlp.fc1 / fc2; the attention projections keep 2.0 (README)
    for i in range(n_layers):
        for j, mod in enumerate(["self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj", "mlp_fc1", "mlp_fc2"]):
            k = (i + j) % 6
            rows.append((f"{prefix}text_model_encoder_layers_{i}_{mod}",
                         f"text_model.encoder.layers.{i}.{mod.replace('self_attn_', 'self_attn.').replace('mlp_', 'mlp.')}",
                         component, ranks[k], alphas[k] if mod.startswith("mlp") else 2.0))
    return rows + list(extra)


if __name__ == "__main__":
    meta = {}
    # tiny-sdxl: SGM / LDM block names, as sd-scripts writes SDXL LoRAs (input_blocks / middle_block / output_blocks).
    U = "unet"
    sdxl_unet = [
        ("lora_unet_input_blocks_1_0_in_layers_2", "down_blocks.0.resnets.0.conv1", U, 4, 2.0),
        ("lora_unet_input_blocks_1_0_out_layers_3", "down_blocks.0.resnets.0.conv2", U, 2, 1.0),
        ("lora_unet_input_blocks_2_0_emb_layers_1", "down_blocks.0.resnets.1.time_emb_proj", U, 4, 2.0),
        ("lora_unet_input_blocks_3_0_op", "down_blocks.0.downsamplers.0.conv", U, 4, 3.0),
        ("lora_unet_input_blocks_4_0_skip_connection", "down_blocks.1.resnets.0.conv_shortcut", U, 4, 2.0),
        ("lora_unet_input_blocks_4_1_proj_in", "down_blocks.1.attentions.0.proj_in", U, 4, 2.0),
        ("lora_unet_input_blocks_4_1_proj_out", "down_blocks.1.attentions.0.proj_out", U, 8, 4.0),
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", U, 4, 2.0),
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_k", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k", U, 4, 2.0),
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_v", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_v", U, 2, 2.0),
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_out_0", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0", U, 4, 2.0),
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_q", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q", U, 4, 2.0),
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", U, 4, 2.0),
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_v", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v", U, 4, 2.0),
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_out_0", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0", U, 4, 2.0),
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_ff_net_0_proj", "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj", U, 4, 1.0),
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_ff_net_2", "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2", U, 4, 2.0),
        ("lora_unet_input_blocks_7_1_transformer_blocks_1_attn1_to_q", "down_blocks.2.attentions.0.transformer_blocks.1.attn1.to_q", U, 4, 2.0),
        ("lora_unet_input_blocks_8_1_transformer_blocks_0_attn2_to_out_0", "down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_out.0", U, 2, 2.0),
        ("lora_unet_middle_block_0_in_layers_2", "mid_block.resnets.0.conv1", U, 4, 2.0),
        ("lora_unet_middle_block_1_proj_in", "mid_block.attentions.0.proj_in", U, 4, 2.0),
        ("lora_unet_middle_block_1_transformer_blocks_1_attn2_to_k", "mid_block.attentions.0.transformer_blocks.1.attn2.to_k", U, 4, 2.0),
        ("lora_unet_middle_block_2_emb_layers_1", "mid_block.resnets.1.time_emb_proj", U, 4, 2.0),
        ("lora_unet_middle_block_2_out_layers_3", "mid_block.resnets.1.conv2", U, 4, 1.0),
        ("lora_unet_output_blocks_0_0_skip_connection", "up_blocks.0.resnets.0.conv_shortcut", U, 4, 2.0),
        ("lora_unet_output_blocks_0_1_transformer_blocks_1_ff_net_2", "up_blocks.0.attentions.0.transformer_blocks.1.ff.net.2", U, 4, 2.0),
        ("lora_unet_output_blocks_2_2_conv", "up_blocks.0.upsamplers.0.conv", U, 4, 3.0),
        ("lora_unet_output_blocks_4_1_proj_out", "up_blocks.1.attentions.1.proj_out", U, 4, 2.0),
        ("lora_unet_output_blocks_5_0_in_layers_2", "up_blocks.1.resnets.2.conv1", U, 2, 2.0),
        ("lora_unet_output_blocks_5_2_conv", "up_blocks.1.upsamplers.0.conv", U, 4, 2.0),
        ("lora_unet_output_blocks_6_0_skip_connection", "up_blocks.2.resnets.0.conv_shortcut", U, 4, 1.0),
        ("lora_unet_output_blocks_8_0_out_layers_3", "up_blocks.2.resnets.2.conv2", U, 4, 2.0),
    ]
    sdxl = sdxl_unet + te_layers("lora_te1_", "text_encoder", 3) + te_layers("lora_te2_", "text_encoder_2", 3)
    meta["sdxl"] = run("sdxl", StableDiffusionXLPipeline, FX + "tiny-sdxl/model", "unet", ["text_encoder", "text_encoder_2"], sdxl, 11,
                       lambda t: dict(text_encoder=t["text_encoder"], text_encoder_2=t["text_encoder_2"], tokenizer=None, tokenizer_2=None,
                                      add_watermarker=False))
    # tiny-sd15: diffusers module names with "_" for ".", as sd-scripts writes SD 1.x LoRAs (LoCon: 3x3 and 1x1 convs).
    sd15_unet = [
        ("lora_unet_down_blocks_0_attentions_0_proj_in", "down_blocks.0.attentions.0.proj_in", U, 4, 2.0),
        ("lora_unet_down_blocks_0_attentions_0_proj_out", "down_blocks.0.attentions.0.proj_out", U, 4, 1.0),
        ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", U, 4, 2.0),
        ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k", U, 2, 2.0),
        ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_v", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v", U, 4, 2.0),
        ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0", U, 4, 2.0),
        ("lora_unet_down_blocks_1_attentions_1_transformer_blocks_0_attn2_to_q", "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_q", U, 4, 2.0),
        ("lora_unet_down_blocks_1_attentions_1_transformer_blocks_0_attn2_to_k", "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k", U, 4, 2.0),
        ("lora_unet_down_blocks_1_attentions_1_transformer_blocks_0_attn2_to_v", "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_v", U, 4, 2.0),
        ("lora_unet_down_blocks_1_attentions_1_transformer_blocks_0_attn2_to_out_0", "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_out.0", U, 8, 2.0),
        ("lora_unet_down_blocks_1_attentions_1_transformer_blocks_0_ff_net_0_proj", "down_blocks.1.attentions.1.transformer_blocks.0.ff.net.0.proj", U, 4, 2.0),
        ("lora_unet_down_blocks_1_attentions_1_transformer_blocks_0_ff_net_2", "down_blocks.1.attentions.1.transformer_blocks.0.ff.net.2", U, 4, 1.0),
        ("lora_unet_down_blocks_0_resnets_0_conv1", "down_blocks.0.resnets.0.conv1", U, 4, 2.0),
        ("lora_unet_down_blocks_0_resnets_1_conv2", "down_blocks.0.resnets.1.conv2", U, 2, 2.0),
        ("lora_unet_down_blocks_0_resnets_1_time_emb_proj", "down_blocks.0.resnets.1.time_emb_proj", U, 4, 3.0),
        ("lora_unet_down_blocks_0_downsamplers_0_conv", "down_blocks.0.downsamplers.0.conv", U, 4, 2.0),
        ("lora_unet_down_blocks_2_resnets_0_conv_shortcut", "down_blocks.2.resnets.0.conv_shortcut", U, 4, 2.0),
        ("lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k", "mid_block.attentions.0.transformer_blocks.0.attn2.to_k", U, 4, 2.0),
        ("lora_unet_mid_block_resnets_1_conv1", "mid_block.resnets.1.conv1", U, 4, 4.0),
        ("lora_unet_up_blocks_0_resnets_0_conv_shortcut", "up_blocks.0.resnets.0.conv_shortcut", U, 4, 2.0),
        ("lora_unet_up_blocks_0_upsamplers_0_conv", "up_blocks.0.upsamplers.0.conv", U, 4, 2.0),
        ("lora_unet_up_blocks_3_attentions_2_proj_out", "up_blocks.3.attentions.2.proj_out", U, 4, 2.0),
        ("lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_0_proj", "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.0.proj", U, 4, 1.0),
        ("lora_unet_up_blocks_3_resnets_2_conv2", "up_blocks.3.resnets.2.conv2", U, 4, 2.0),
        # Outside the blocks: diffusers' converter does not give these their module names (see meta.json).
        ("lora_unet_time_embedding_linear_1", "time_embedding.linear_1", U, 4, 2.0),
        ("lora_unet_conv_in", "conv_in", U, 4, 2.0),
    ]
    sd15 = sd15_unet + te_layers("lora_te_", "text_encoder", 2)
    meta["sd15"] = run("sd15", StableDiffusionPipeline, FX + "tiny-sd15/model", "unet", ["text_encoder"], sd15, 12,
                       lambda t: dict(text_encoder=t["text_encoder"], tokenizer=None, safety_checker=None, feature_extractor=None,
                                      requires_safety_checker=False))
    meta["versions"] = {"diffusers": "0.36.0 (source)", "peft": peft.__version__, "torch": torch.__version__}
    json.dump(meta, open(OUT + "meta.json", "w"), indent=1)
