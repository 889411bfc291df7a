"""What the transformer-LoRA reference scripts share (qwenimage_lora.py, z_image_lora.py, flux2_lora.py): the Linear
modules of a model, a random PEFT adapter written in diffusers' own layout by a pipeline's save_lora_weights, and the
weight deltas diffusers' load_lora_weights + fuse_lora makes on a fresh transformer. Our code, not diffusers'.
"""
import torch
import torch.nn as nn
from peft.utils import get_peft_model_state_dict


def linears(model):
    """Every nn.Linear of the model, by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def save_random_peft_lora(pipeline_class, out, model, config, seed):
    """Adds the PEFT adapter `config` to `model`, draws every lora_ tensor as 0.2 N(0, 1) from torch.Generator seed `seed`,
    and writes it with `pipeline_class.save_lora_weights` (rank / alpha patterns in the adapter metadata) to
    out + "pytorch_lora_weights.safetensors"; returns that path and the number of PEFT tensors written."""
    model.add_adapter(config)
    g = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    layers = get_peft_model_state_dict(model)
    metadata = {k: v for k, v in config.to_dict().items() if k in ("r", "lora_alpha", "rank_pattern", "alpha_pattern", "use_rslora",
                                                                     "use_dora", "target_modules", "lora_bias")}
    metadata["target_modules"] = sorted(metadata["target_modules"])
    pipeline_class.save_lora_weights(out, transformer_lora_layers=layers, transformer_lora_adapter_metadata=metadata,
                                     weight_name="pytorch_lora_weights.safetensors", safe_serialization=True)
    return out + "pytorch_lora_weights.safetensors", len(layers)


def fused_deltas(case, path, scale, pipeline):
    """diffusers' load_lora_weights(path) + fuse_lora(lora_scale=scale) on `pipeline` (a fresh pipeline around a fresh
    transformer): every weight that changed as "<case>.delta.transformer.<parameter>" = after - before."""
    fresh = pipeline.transformer
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    pipeline.load_lora_weights(path, low_cpu_mem_usage=False)
    pipeline.fuse_lora(lora_scale=scale)
    pipeline.unload_lora_weights()
    after = fresh.state_dict()
    return {f"{case}.delta.transformer.{k}": after[k] - before[k] for k in before if not torch.equal(after[k], before[k])}
