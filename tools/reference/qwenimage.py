"""diffusers' own Qwen-Image transformer and pipelines on a tiny Qwen-Image model: writes local-diffusers/qwenimage/.

Usage (diffusers v0.39.0 source; see README.md for the environment):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy39 python3 tools/reference/qwenimage.py tests/DiffusersSharp.Tests/Fixtures

Writes, under local-diffusers/qwenimage/:
- transformer/: a tiny QwenImageTransformer2DModel (diffusers' test config: 2 blocks, 3 heads of 16, 16-wide text,
  rotary axes 8 / 4 / 4) with diffusers' random initialisation after torch.manual_seed(0), then seeded values for what
  that initialisation leaves at 1 (the RMSNorm weights of the text input and of q / k), so a missing norm shows;
- vae/: a tiny AutoencoderKLQwenImage (8 base channels, 4 latent channels, 4x down) with seeded latents_mean / latents_std
  so the pipeline's (de)normalisation shows;
- scheduler/: Qwen/Qwen-Image's FlowMatchEulerDiscreteScheduler config (dynamic exponential shift, shift_terminal 0.02);
- expected.safetensors: transformer forwards (a padded batch with its text mask, and an unmasked odd-sized grid) and
  QwenImagePipeline / QwenImageImg2ImgPipeline / QwenImageInpaintPipeline runs given prompt embeddings drawn here (the text encoder is checked on
  its own), each step's latents and the decoded images;
- counts.json: state-dict tensor and element counts of the full-size Qwen-Image transformer (Qwen/Qwen-Image's config),
  built on the meta device.
"""
import json
import os
import sys

import numpy as np
import torch
from torch import nn
from PIL import Image
from safetensors.torch import save_file

from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
from diffusers import QwenImageImg2ImgPipeline, QwenImageInpaintPipeline, QwenImagePipeline

root = sys.argv[1]
here = f"{root}/local-diffusers/qwenimage"


def save_model(model, folder):
    # save_pretrained needs huggingface_hub's size table, which torch 1.13 lacks entries for: write its two files.
    model.save_config(folder)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{folder}/diffusion_pytorch_model.safetensors",
              metadata={"format": "pt"})


config = dict(patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=3,
              joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4))
torch.manual_seed(0)
model = QwenImageTransformer2DModel(**config).eval()
g = torch.Generator("cpu").manual_seed(20261128)
with torch.no_grad():
    for name, p in model.named_parameters():
        if name == "txt_norm.weight" or ".norm_" in name:
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
save_model(model, f"{here}/transformer")
transformer = QwenImageTransformer2DModel.from_pretrained(f"{here}/transformer").eval()

torch.manual_seed(0)
vae_model = AutoencoderKLQwenImage(base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1,
                                   temperal_downsample=[False, True],
                                   latents_mean=[round(float(v), 4) for v in 0.3 * torch.randn(4, generator=g)],
                                   latents_std=[round(float(v), 4) for v in 0.5 + torch.rand(4, generator=g)]).eval()
save_model(vae_model, f"{here}/vae")
vae = AutoencoderKLQwenImage.from_pretrained(f"{here}/vae").eval()

# Qwen/Qwen-Image scheduler/scheduler_config.json.
scheduler_config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256, "base_shift": 0.5,
                    "invert_sigmas": False, "max_image_seq_len": 8192, "max_shift": 0.9, "num_train_timesteps": 1000,
                    "shift": 1.0, "shift_terminal": 0.02, "stochastic_sampling": False,
                    "time_shift_type": "exponential", "use_beta_sigmas": False, "use_dynamic_shifting": True,
                    "use_exponential_sigmas": False, "use_karras_sigmas": False}
os.makedirs(f"{here}/scheduler", exist_ok=True)
with open(f"{here}/scheduler/scheduler_config.json", "w") as f:
    json.dump(scheduler_config, f, indent=2, sort_keys=True)
    f.write("\n")
with open(f"{here}/model_index.json", "w") as f:
    json.dump({"_class_name": "QwenImagePipeline", "_diffusers_version": "0.39.0",
               "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
               "text_encoder": [None, None], "tokenizer": [None, None],
               "transformer": ["diffusers", "QwenImageTransformer2DModel"],
               "vae": ["diffusers", "AutoencoderKLQwenImage"]}, f, indent=2)
    f.write("\n")

out = {}
g = torch.Generator("cpu").manual_seed(20261129)

# Forward 1: two samples, an 8 x 6 packed grid (48 tokens), text of 7 and 11 tokens padded to 11 with its mask.
x = torch.randn(2, 48, 16, generator=g)
text = torch.randn(2, 11, 16, generator=g)
mask = torch.ones(2, 11, dtype=torch.long)
mask[0, 7:] = 0
text[0, 7:] = 0
t = torch.tensor([0.25, 0.875])
with torch.no_grad():
    out["tf.masked.out"] = transformer(hidden_states=x, encoder_hidden_states=text, encoder_hidden_states_mask=mask,
                                       timestep=t, img_shapes=[[(1, 8, 6)]] * 2, return_dict=False)[0]
out["tf.masked.x"], out["tf.masked.text"], out["tf.masked.mask"], out["tf.masked.t"] = x, text, mask.float(), t
# Forward 2: one sample, an odd 5 x 4 grid (rows centred on -3 .. 1), 9 text tokens, no mask.
x = torch.randn(1, 20, 16, generator=g)
text = torch.randn(1, 9, 16, generator=g)
t = torch.tensor([0.6])
with torch.no_grad():
    out["tf.plain.out"] = transformer(hidden_states=x, encoder_hidden_states=text, encoder_hidden_states_mask=None,
                                      timestep=t, img_shapes=[[(1, 5, 4)]], return_dict=False)[0]
out["tf.plain.x"], out["tf.plain.text"], out["tf.plain.t"] = x, text, t


def pipeline(cls):
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(here, subfolder="scheduler")
    return cls(scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None, transformer=transformer)


t2i, i2i, inpaint = pipeline(QwenImagePipeline), pipeline(QwenImageImg2ImgPipeline), pipeline(QwenImageInpaintPipeline)

# Prompt embeddings as the text encoder gives them: two prompts of 7 and 11 tokens (zero-padded to 11, with the mask),
# two negative ones of 5 and 9 tokens (padded to 9).
embeds = torch.randn(2, 11, 16, generator=g)
embeds[0, 7:] = 0
embeds_mask = torch.ones(2, 11, dtype=torch.long)
embeds_mask[0, 7:] = 0
negatives = torch.randn(2, 9, 16, generator=g)
negatives[0, 5:] = 0
negatives_mask = torch.ones(2, 9, dtype=torch.long)
negatives_mask[0, 5:] = 0
out["in.prompt_embeds"], out["in.prompt_embeds_mask"] = embeds, embeds_mask.float()
out["in.negative_prompt_embeds"], out["in.negative_prompt_embeds_mask"] = negatives, negatives_mask.float()

one = dict(prompt_embeds=embeds[:1, :7], prompt_embeds_mask=embeds_mask[:1, :7])
one_cfg = dict(**one, negative_prompt_embeds=negatives[:1, :5], negative_prompt_embeds_mask=negatives_mask[:1, :5])
two_cfg = dict(prompt_embeds=embeds, prompt_embeds_mask=embeds_mask, negative_prompt_embeds=negatives,
               negative_prompt_embeds_mask=negatives_mask)
image = Image.open(f"{root}/tiny-sd3/init_image.png").convert("RGB")
cropped = image.crop((0, 0, 70, 50))  # 70 x 50: the processor resizes it to 64 x 48 (multiples of 8)
mask = Image.open(f"{root}/tiny-sd3/mask.png")
cases = {
    "t2i": (t2i, dict(**one, height=64, width=64, num_inference_steps=3, true_cfg_scale=1.0), 42),
    # True CFG with diffusers' norm rescale of the combined prediction.
    "t2i_cfg": (t2i, dict(**one_cfg, height=64, width=64, num_inference_steps=3, true_cfg_scale=4.0), 7),
    # Two prompts of different lengths, padded embeddings with their masks, a wide image. One image per prompt: with more,
    # diffusers v0.39's encode_prompt repeats the embeddings per prompt ([p0, p0, p1, p1]) but tiles the masks
    # ([m0, m1, m0, m1]), so images get another prompt's mask; DiffusersSharp pairs each image with its prompt's mask.
    "t2i_two": (t2i, dict(**two_cfg, height=48, width=80, num_inference_steps=2, true_cfg_scale=2.5), 123456),
    "t2i_sigmas": (t2i, dict(**one, height=32, width=64, sigmas=[1.0, 0.75, 0.5, 0.2], true_cfg_scale=1.0), 8),
    "i2i": (i2i, dict(**one, image=image, height=64, width=64, strength=0.6, num_inference_steps=5, true_cfg_scale=1.0), 123),
    "i2i_cfg": (i2i, dict(**one_cfg, image=cropped, height=48, width=64, strength=0.85, num_inference_steps=4,
                          true_cfg_scale=3.0), 99),
    # QwenImageInpaintPipeline: white = repaint; the known region is reset to the noised image latents after each step.
    "inpaint": (inpaint, dict(**one, image=image, mask_image=mask, height=64, width=64, strength=0.8, num_inference_steps=4,
                              true_cfg_scale=1.0), 21),
    "inpaint_cfg": (inpaint, dict(**one_cfg, image=image, mask_image=mask, height=48, width=64, strength=1.0,
                                  num_inference_steps=3, true_cfg_scale=3.0, num_images_per_prompt=2), 22),
}
for name, (pipe, args, seed) in cases.items():
    def on_step_end(p, i, t, kw, name=name):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        return kw
    with torch.no_grad():
        # output_type "latent" gives the packed latents [B, tokens, 4 x 4]; "np" the decoded images, NHWC in [0, 1].
        out[f"{name}.latents"] = pipe(**args, output_type="latent", callback_on_step_end=on_step_end,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(pipe(**args, output_type="np",
                                                     generator=torch.Generator("cpu").manual_seed(seed)).images)

# padding_mask_crop: the region around the mask inpainted at 48 x 64, then pasted back onto the 64 x 64 image (output
# type "pil" only, as diffusers requires): every step's latents and the pasted 8-bit images.
def on_crop_step(p, i, t, kw):
    out[f"inpaint_crop.step{i}.latents"] = kw["latents"].clone()
    return kw


with torch.no_grad():
    pasted = inpaint(**one, image=image, mask_image=mask, height=48, width=64, strength=0.9, num_inference_steps=3,
                     true_cfg_scale=1.0, padding_mask_crop=4, num_images_per_prompt=2, output_type="pil",
                     callback_on_step_end=on_crop_step, generator=torch.Generator("cpu").manual_seed(23)).images
out["inpaint_crop.pil"] = torch.from_numpy(np.stack([np.array(p) for p in pasted]))

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{here}/expected.safetensors")
print(f"wrote {len(out)} tensors to {here}/expected.safetensors")

# Qwen/Qwen-Image transformer/config.json (the diffusers defaults), built without memory.
full_config = dict(patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128,
                   num_attention_heads=24, joint_attention_dim=3584, guidance_embeds=False, axes_dims_rope=[16, 56, 56])
_register, _reset = nn.Module.register_parameter, nn.Linear.reset_parameters


def _register_on_meta(self, name, p):
    if p is not None and p.device.type != "meta":
        p = nn.Parameter(p.detach().to("meta"), p.requires_grad)
    _register(self, name, p)


nn.Module.register_parameter, nn.Linear.reset_parameters = _register_on_meta, lambda self: None
full = QwenImageTransformer2DModel(**full_config)
nn.Module.register_parameter, nn.Linear.reset_parameters = _register, _reset
state = full.state_dict()
counts = {"transformer.qwen-image": {"config": full_config, "tensors": len(state),
                                     "elements": sum(v.numel() for v in state.values())}}
with open(f"{here}/counts.json", "w") as f:
    json.dump(counts, f, indent=2, sort_keys=True)
    f.write("\n")
print(f"full-size transformer: {len(state)} tensors, {counts['transformer.qwen-image']['elements']:,} elements")
