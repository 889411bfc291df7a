"""diffusers' own FluxPriorReduxPipeline (FLUX.1-Redux) on a tiny model: writes local-diffusers/flux-redux (see its README.md).

Usage, from the repository root (environment: tools/reference/README.md; /tmp/reftf must hold transformers' SigLIP files,
as for siglip_vision.py):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy /usr/bin/python3 tools/reference/flux_redux.py tests/DiffusersSharp.Tests/Fixtures

1. A tiny FLUX.1-Redux pipeline folder in diffusers' layout (`pipeline/`): model_index.json (FluxPriorReduxPipeline, the
   text encoders and tokenizers null, as in black-forest-labs/FLUX.1-Redux-dev), `image_encoder/` (a tiny
   SiglipVisionModel: hidden 32, 28 x 28 pixels, patch 7, so 16 image tokens), `feature_extractor/preprocessor_config.json`
   (SiglipImageProcessor at size 28) and `image_embedder/` (diffusers' ReduxImageEncoder with redux_dim 32 and
   txt_in_features 96, local-diffusers/flux's joint_attention_dim). Weights drawn here under fixed seeds.
2. transformers' OWN SiglipVisionModel (modeling_siglip.py, through tools/reference/pyenv-transformers) runs in a child
   process, since diffusers' environment has the transformers stub: it draws and writes the image encoder, loads it back
   strictly and encodes the pixel batches the pipeline will hand it. In the pipeline, `image_encoder` is a stand-in module
   that checks it is given exactly those pixel values and returns the child's last_hidden_state.
3. transformers' SiglipImageProcessor cannot run here (the stub); `feature_extractor` is a stand-in whose `preprocess`
   does what transformers' does with FLUX.1-Redux's config (image_processing_siglip.py, image_transforms.py): RGB, PIL
   BICUBIC resize of the 8-bit image to size x size, rescale by 1/255 in float64 then float32, normalize
   (x - 0.5) / 0.5 in float32, channels first, stacked into a float32 tensor.
4. diffusers' zeros path (no text encoder: zeros [B, 512, 4096] and [B, 768]) cannot meet a tiny image embedder; the text
   part runs through diffusers' encode_prompt with given prompt_embeds / pooled_prompt_embeds, which it takes when
   `text_encoder` is not None: a placeholder module whose only use there is its `.dtype` (float32).
5. FluxPipeline (local-diffusers/flux's tiny transformer and scheduler, tiny-sd3's VAE, no text encoders) given the
   prior's output, as diffusers' example does (`pipe(**pipe_prior_output)`).
"""
import json
import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from diffusers.pipelines.flux.modeling_flux import ReduxImageEncoder
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline
from diffusers.pipelines.flux.pipeline_flux_prior_redux import FluxPriorReduxPipeline

root = sys.argv[1]
out_dir = f"{root}/local-diffusers/flux-redux"
pipe_dir = f"{out_dir}/pipeline"
for sub in ["image_encoder", "feature_extractor", "image_embedder"]:
    os.makedirs(f"{pipe_dir}/{sub}", exist_ok=True)
out = {}
g = torch.Generator("cpu").manual_seed(20261203)
SIZE, REDUX_DIM, TXT = 28, 32, 96


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


# 1. The folder's configs. model_index.json as diffusers' save_pretrained writes FLUX.1-Redux-dev's.
write_json(f"{pipe_dir}/model_index.json", {
    "_class_name": "FluxPriorReduxPipeline", "_diffusers_version": "0.36.0",
    "feature_extractor": ["transformers", "SiglipImageProcessor"], "image_embedder": ["flux", "ReduxImageEncoder"],
    "image_encoder": ["transformers", "SiglipVisionModel"], "text_encoder": [None, None], "text_encoder_2": [None, None],
    "tokenizer": [None, None], "tokenizer_2": [None, None]})
preprocessor = {"do_convert_rgb": None, "do_normalize": True, "do_rescale": True, "do_resize": True,
                "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "SiglipImageProcessor", "image_std": [0.5, 0.5, 0.5],
                "processor_class": "SiglipProcessor", "resample": 3, "rescale_factor": 0.00392156862745098,
                "size": {"height": SIZE, "width": SIZE}}
write_json(f"{pipe_dir}/feature_extractor/preprocessor_config.json", preprocessor)
write_json(f"{pipe_dir}/image_encoder/config.json", {
    "architectures": ["SiglipVisionModel"], "model_type": "siglip_vision_model", "hidden_act": "gelu_pytorch_tanh",
    "hidden_size": REDUX_DIM, "intermediate_size": 48, "num_hidden_layers": 3, "num_attention_heads": 2,
    "image_size": SIZE, "patch_size": 7, "num_channels": 3, "layer_norm_eps": 1e-6, "torch_dtype": "float32"})

# The image embedder: diffusers' class (its config as save_pretrained writes it; save_pretrained itself fails on the
# shims), weights drawn in its state_dict order (linear weights randn / sqrt(fan-in), biases 0.1 randn), then loaded
# back by diffusers' from_pretrained.
write_json(f"{pipe_dir}/image_embedder/config.json", {"_class_name": "ReduxImageEncoder", "_diffusers_version": "0.36.0",
                                                      "redux_dim": REDUX_DIM, "txt_in_features": TXT})
shell = ReduxImageEncoder(redux_dim=REDUX_DIM, txt_in_features=TXT)
save_file({k: (0.1 * torch.randn(v.shape, generator=g) if k.endswith(".bias")
               else torch.randn(v.shape, generator=g) / v.shape[1] ** 0.5)
           for k, v in shell.state_dict().items()}, f"{pipe_dir}/image_embedder/diffusion_pytorch_model.safetensors")
image_embedder = ReduxImageEncoder.from_pretrained(f"{pipe_dir}/image_embedder").eval()


# 2. Images (8-bit RGB, drawn) and the stand-in feature extractor.
def draw_image(h, w):
    return Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy(), "RGB")


images = [draw_image(30, 40), draw_image(17, 20)]  # one shrunk, one enlarged to 28 x 28
for i, im in enumerate(images):
    im.save(f"{out_dir}/image{i + 1}.png")
images = [Image.open(f"{out_dir}/image{i + 1}.png") for i in range(2)]  # what runs is what was written


class BatchFeatureStandIn(dict):
    def to(self, device=None, dtype=None):
        return BatchFeatureStandIn({k: v.to(device=device, dtype=dtype) for k, v in self.items()})


class SiglipImageProcessorStandIn:
    """transformers' SiglipImageProcessor.preprocess with FLUX.1-Redux's preprocessor_config.json."""

    def __init__(self, config):
        self.config = config

    def preprocess(self, images, do_resize=None, return_tensors=None, do_convert_rgb=None):
        assert do_resize and return_tensors == "pt" and do_convert_rgb
        images = images if isinstance(images, list) else [images]
        c = self.config
        arrays = []
        for image in images:
            image = image.convert("RGB")  # convert_to_rgb
            image = image.resize((c["size"]["width"], c["size"]["height"]), resample=c["resample"])  # resize (uint8: no rescale)
            x = np.array(image)
            x = (x.astype(np.float64) * c["rescale_factor"]).astype(np.float32)  # rescale
            mean, std = np.array(c["image_mean"], dtype=x.dtype), np.array(c["image_std"], dtype=x.dtype)
            x = (x - mean) / std  # normalize (channels last)
            arrays.append(x.transpose(2, 0, 1))  # to_channel_dimension_format FIRST
        return BatchFeatureStandIn(pixel_values=torch.tensor(np.stack(arrays)))


feature_extractor = SiglipImageProcessorStandIn(preprocessor)

# Prior cases: (images, prompt_embeds rows, prompt_embeds_scale, pooled_prompt_embeds_scale).
cases = {
    "one": ([images[0]], 1, 1.0, 1.0),
    "two": (images, 2, [0.7, 1.3], [0.4, 0.9]),
    "two_scalar": (images, 2, 0.5, 0.8),
}
batches = {name: feature_extractor.preprocess(images=im, do_resize=True, return_tensors="pt", do_convert_rgb=True)["pixel_values"]
           for name, (im, _, _, _) in cases.items()}
out["image1.pixel_values"] = batches["one"][0:1]
out["images.pixel_values"] = batches["two"]

# 3. transformers' own SiglipVisionModel in a child process: draws and writes the weights, loads them back, encodes each batch.
tmp = f"{out_dir}/.encoder_io.safetensors"
save_file({k: v.contiguous() for k, v in batches.items()}, tmp)
folder = f"{pipe_dir}/image_encoder"
child = f"""
import json, torch
from safetensors.torch import load_file, save_file
import transformers.activations as activations
activations.ACT2FN.setdefault("gelu_pytorch_tanh", torch.nn.GELU(approximate="tanh"))
from transformers.models.siglip.configuration_siglip import SiglipVisionConfig
from transformers.models.siglip.modeling_siglip import SiglipVisionModel
g = torch.Generator("cpu").manual_seed(20261204)
def draw(key, shape):
    if key.endswith(("layer_norm1.weight", "layer_norm2.weight", "layernorm.weight")):
        return 1 + 0.1 * torch.randn(shape, generator=g)
    if key.endswith((".bias", "in_proj_bias")):
        return 0.1 * torch.randn(shape, generator=g)
    if key.endswith(("position_embedding.weight", "probe")):
        return 0.5 * torch.randn(shape, generator=g)
    fan_in = 1
    for s in shape[1:]:
        fan_in *= s
    return torch.randn(shape, generator=g) / fan_in ** 0.5
with open({json.dumps(folder + '/config.json')}) as f:
    config = SiglipVisionConfig(**json.load(f))
shell = SiglipVisionModel(config)
save_file({{k: draw(k, v.shape) for k, v in shell.state_dict().items()}}, {json.dumps(folder + '/model.safetensors')})
model = SiglipVisionModel(config).eval()
model.load_state_dict(load_file({json.dumps(folder + '/model.safetensors')}), strict=True)
x = load_file({json.dumps(tmp)})
with torch.no_grad():
    save_file({{k: model(pixel_values=v).last_hidden_state.contiguous() for k, v in x.items()}}, {json.dumps(tmp)})
"""
env = dict(os.environ, PYTHONPATH="tools/reference/pyenv-transformers:tools/reference/pyenv")
subprocess.run([sys.executable, "-c", child], check=True, env=env)
encoded = load_file(tmp)
os.remove(tmp)


class SiglipVisionModelStandIn(torch.nn.Module):
    """Returns transformers' own last_hidden_state (from the child) for exactly the pixel batches it encoded."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # float32: what encode_image reads as the encoder's dtype

    def forward(self, pixel_values):
        for name, batch in batches.items():
            if batch.shape == pixel_values.shape and torch.equal(batch, pixel_values):
                return type("Output", (), {"last_hidden_state": encoded[name]})()
        raise AssertionError("pixel values the child did not encode")


class TextEncoderPlaceholder(torch.nn.Module):
    """Only its dtype is read by encode_prompt when prompt_embeds and pooled_prompt_embeds are given."""

    dtype = torch.float32

    def forward(self, *args, **kwargs):
        raise AssertionError("the text encoder placeholder must not run")


prior = FluxPriorReduxPipeline(image_encoder=SiglipVisionModelStandIn(), feature_extractor=feature_extractor,
                               image_embedder=image_embedder, text_encoder=TextEncoderPlaceholder())

# 4. Prior runs. image_embedder outputs are recorded by a forward hook.
embedded = []
image_embedder.register_forward_hook(lambda m, i, o: embedded.append(o.image_embeds.clone()))
prior_out = {}
for name, (ims, rows, scale, pooled_scale) in cases.items():
    embeds, pooled = torch.randn(rows, 8, TXT, generator=g), torch.randn(rows, 32, generator=g)
    out[f"{name}.in.prompt_embeds"], out[f"{name}.in.pooled_prompt_embeds"] = embeds, pooled.clone()
    with torch.no_grad():
        result = prior(image=ims if len(ims) > 1 else ims[0], prompt_embeds=embeds, pooled_prompt_embeds=pooled,
                       prompt_embeds_scale=scale, pooled_prompt_embeds_scale=pooled_scale)
    out[f"{name}.last_hidden_state"] = encoded[name]
    out[f"{name}.image_embeds"] = embedded.pop()
    out[f"{name}.prompt_embeds"], out[f"{name}.pooled_prompt_embeds"] = result.prompt_embeds, result.pooled_prompt_embeds
    prior_out[name] = result
    print(name, tuple(result.prompt_embeds.shape), tuple(result.pooled_prompt_embeds.shape),
          float(result.prompt_embeds.abs().max()))

# 5. FluxPipeline given the prior's output (case "two"), as diffusers' example passes **pipe_prior_output.
transformer = FluxTransformer2DModel.from_pretrained(f"{root}/local-diffusers/flux", subfolder="transformer").eval()
vae = AutoencoderKL.from_pretrained(f"{root}/tiny-sd3/model", subfolder="vae").eval()
scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(f"{root}/local-diffusers/flux", subfolder="scheduler")
flux = FluxPipeline(scheduler=scheduler, vae=vae, transformer=transformer, text_encoder=None, tokenizer=None,
                    text_encoder_2=None, tokenizer_2=None, image_encoder=None, feature_extractor=None)


def on_step_end(p, i, t, kw):
    out[f"flux.step{i}.latents"] = kw["latents"].clone()
    return kw


args = dict(height=64, width=64, num_inference_steps=3, guidance_scale=2.5, **prior_out["two"])
with torch.no_grad():
    out["flux.latents"] = flux(**args, output_type="latent", callback_on_step_end=on_step_end,
                               generator=torch.Generator("cpu").manual_seed(0)).images
    out["flux.image"] = torch.from_numpy(flux(**args, output_type="np", generator=torch.Generator("cpu").manual_seed(0)).images)
print("flux", tuple(out["flux.latents"].shape), float(out["flux.latents"].abs().max()))

save_file({k: v.contiguous().float() for k, v in out.items()}, f"{out_dir}/expected.safetensors")
print(f"wrote {len(out)} tensors to {out_dir}/expected.safetensors")
