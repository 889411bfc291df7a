"""diffusers' own ZImagePipeline / ZImageImg2ImgPipeline run from prompt STRINGS, with transformers' own Qwen3Model as the
text encoder: writes local-diffusers/z-image-prompt/ (see its README.md).

Usage, from the repository root, after z_image.py and the qwen3 fixture's scripts (qwen2_tokenizer.py, hf_tokenizers
qwen2, qwen3.py), with transformers' files saved under /tmp/reftf (tools/reference/README.md):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy /usr/bin/python3 tools/reference/z_image_prompt.py tests/DiffusersSharp.Tests/Fixtures

1. transformer/: a tiny ZImageTransformer2DModel whose cap_feat_dim is the qwen3 fixture's text encoder width (64): one
   noise-refiner, one context-refiner and one main block, otherwise z_image.py's structure; diffusers' initialisation after
   torch.manual_seed(0), then, from torch.Generator("cpu").manual_seed(20261203), normal pad tokens (diffusers leaves them
   torch.empty) and 1 + 0.2 N(0, 1) RMSNorm weights (all 1 in diffusers).
2. The pipelines are diffusers' own classes, built with that transformer, tiny-sd3's VAE, z-image's scheduler config
   (Z-Image-Turbo's) and, as tokenizer and text_encoder, two stand-ins for exactly the calls _encode_prompt makes:
   - the tokenizer's apply_chat_template returns the qwen3 fixture's rendering (cases.json: our reading of Qwen3's
     template) and __call__ gives the ids Hugging Face's tokenizers library gave for that text (hf_tokenizers.json), cut
     to max_length and right-padded with <|endoftext|>, mask 1 / 0 (transformers' padding="max_length", truncation=True);
   - the text encoder returns, for the ids and mask diffusers passes, the hidden states of transformers' own Qwen3Model
     (models/qwen3/modeling_qwen3.py, eager attention) loaded strictly from the qwen3 fixture's text_encoder/ and run in
     a child process on tools/reference/pyenv-transformers. A first pass over every case records the (ids, mask) pairs
     (the stand-in then returns zeros); the child runs them; a second pass replays its outputs (each pair looked up).
   Only the prompts cases.json renders are usable: its three encode prompts ("" among them, diffusers' negative prompt
   under CFG) and "A photo of a cat". diffusers' _encode_prompt writes the rendering back into a list prompt it is
   given, so every call gets fresh lists.
3. expected.safetensors: per case, the final latents (output_type "latent"), every step's latents (callback_on_step_end)
   and the decoded image (output_type "np"), each call with torch.Generator("cpu").manual_seed(seed).
"""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import torch
from PIL import Image
from safetensors.torch import save_file

import z_image_torch_compat
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImageTransformer2DModel
from diffusers.pipelines.z_image.pipeline_z_image import ZImagePipeline
from diffusers.pipelines.z_image.pipeline_z_image_img2img import ZImageImg2ImgPipeline

# What transformer_z_image.py needs beyond torch 1.13 (no computation changed): z_image_torch_compat.py.
z_image_torch_compat.install()

root = sys.argv[1]
here = f"{root}/local-diffusers/z-image-prompt"
qwen3 = f"{root}/local-diffusers/qwen3"
os.makedirs(f"{here}/transformer", exist_ok=True)

with open(f"{qwen3}/cases.json", encoding="utf-8") as f:
    cases = json.load(f)
with open(f"{qwen3}/hf_tokenizers.json", encoding="utf-8") as f:
    hf_ids = {e["text"]: e["ids"] for e in json.load(f)["ids"]}
with open(f"{qwen3}/tokenizer/tokenizer_config.json", encoding="utf-8") as f:
    tok_config = json.load(f)
with open(f"{qwen3}/text_encoder/config.json", encoding="utf-8") as f:
    te_config = json.load(f)
PAD = next(int(k) for k, v in tok_config["added_tokens_decoder"].items() if v["content"] == tok_config["pad_token"])

# 1. The transformer.
config = dict(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=64, n_layers=1, n_refiner_layers=1,
              n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=te_config["hidden_size"],
              rope_theta=256.0, t_scale=1000.0, axes_dims=[8, 12, 12], axes_lens=[256, 32, 32])
torch.manual_seed(0)
model = ZImageTransformer2DModel(**config).eval()
g = torch.Generator("cpu").manual_seed(20261203)
with torch.no_grad():
    for name, p in model.named_parameters():
        if name.endswith("pad_token"):
            p.copy_(torch.randn(p.shape, generator=g))
        elif "norm" in name.split(".")[-2] or name == "cap_embedder.0.weight":
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
model.save_config(f"{here}/transformer")
save_file({k: v.contiguous() for k, v in model.state_dict().items()},
          f"{here}/transformer/diffusion_pytorch_model.safetensors", metadata={"format": "pt"})
transformer = ZImageTransformer2DModel.from_pretrained(f"{here}/transformer").eval()
vae = AutoencoderKL.from_pretrained(f"{root}/tiny-sd3/model", subfolder="vae").eval()


# 2. The stand-ins.
class StandInTokenizer:
    """The two calls diffusers' _encode_prompt makes on Z-Image's Qwen2Tokenizer (see the module docstring)."""

    def apply_chat_template(self, messages, tokenize, add_generation_prompt, enable_thinking):
        assert len(messages) == 1 and set(messages[0]) == {"role", "content"} and messages[0]["role"] == "user"
        assert tokenize is False and add_generation_prompt is True and enable_thinking is True
        return cases["chat_template"][messages[0]["content"]]

    def __call__(self, prompts, padding, max_length, truncation, return_tensors):
        assert padding == "max_length" and truncation is True and return_tensors == "pt"
        rows = [hf_ids[p][:max_length] for p in prompts]
        ids = torch.tensor([r + [PAD] * (max_length - len(r)) for r in rows], dtype=torch.int64)
        mask = torch.tensor([[1] * len(r) + [0] * (max_length - len(r)) for r in rows], dtype=torch.int64)
        return SimpleNamespace(input_ids=ids, attention_mask=mask)


def key(ids, mask):
    return (tuple(ids.shape), tuple(ids.flatten().tolist()), tuple(mask.flatten().tolist()))


class ReplayEncoder:
    """Records the (ids, mask) diffusers passes; once the child has run, returns transformers' hidden states for them."""

    def __init__(self):
        self.calls, self.outputs = {}, None

    def __call__(self, input_ids, attention_mask, output_hidden_states):
        assert output_hidden_states is True and attention_mask.dtype == torch.bool
        k = key(input_ids, attention_mask)
        if self.outputs is None:
            self.calls.setdefault(k, (input_ids.clone(), attention_mask.clone()))
            zero = torch.zeros(*input_ids.shape, te_config["hidden_size"])
            return SimpleNamespace(hidden_states=(zero,) * (te_config["num_hidden_layers"] + 1))
        return SimpleNamespace(hidden_states=self.outputs[k])


encoder = ReplayEncoder()


def pipeline(cls):
    # A fresh scheduler per pipeline: the pipelines set scheduler.sigma_min = 0.0 on it.
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(f"{root}/local-diffusers/z-image", subfolder="scheduler")
    return cls(scheduler=scheduler, vae=vae, text_encoder=encoder, tokenizer=StandInTokenizer(), transformer=transformer)


t2i, i2i = pipeline(ZImagePipeline), pipeline(ZImageImg2ImgPipeline)
image = Image.open(f"{root}/tiny-sd3/init_image.png").convert("RGB")
P0, EMPTY, P2 = cases["encode_prompts"]
CAT = "A photo of a cat"
assert EMPTY == ""
CASES = {
    # Z-Image-Turbo's way: guidance 0 (no CFG, no negative prompt encoded).
    "prompt": (t2i, lambda: dict(prompt=P0, height=64, width=64, num_inference_steps=4, guidance_scale=0.0), 42),
    # CFG without a negative prompt: diffusers encodes "" for it.
    "prompt_cfg": (t2i, lambda: dict(prompt=P0, height=64, width=64, num_inference_steps=3, guidance_scale=4.0), 7),
    # Two prompts with their negative prompts, two images each: the lists repeated per image.
    "prompt_two": (t2i, lambda: dict(prompt=[P0, P2], negative_prompt=[CAT, EMPTY], num_images_per_prompt=2, height=32,
                                     width=48, num_inference_steps=2, guidance_scale=3.0), 123456),
    # max_sequence_length 12: both sides cut inside the chat template.
    "prompt_truncated": (t2i, lambda: dict(prompt=P2, negative_prompt=CAT, max_sequence_length=12, height=48, width=48,
                                           num_inference_steps=3, guidance_scale=3.0), 5),
    "i2i_prompt": (i2i, lambda: dict(prompt=P0, negative_prompt=CAT, image=image, strength=0.6, num_inference_steps=4,
                                     guidance_scale=3.0), 123),
}


def run_all(out):
    for name, (pipe, args, seed) in CASES.items():
        def on_step_end(p, i, t, kw, name=name):
            out[f"{name}.step{i}.latents"] = kw["latents"].clone()
            return kw
        with torch.no_grad():
            out[f"{name}.latents"] = pipe(**args(), output_type="latent", callback_on_step_end=on_step_end,
                                          generator=torch.Generator("cpu").manual_seed(seed)).images
            out[f"{name}.image"] = torch.from_numpy(pipe(**args(), output_type="np",
                                                         generator=torch.Generator("cpu").manual_seed(seed)).images)


run_all({})  # records what diffusers passes the text encoder
recorded = list(encoder.calls.values())
print(f"{len(recorded)} distinct text encoder calls: {[tuple(ids.shape) for ids, _ in recorded]}")

scratch = f"/tmp/z_image_prompt_reference_{os.getpid()}"
os.makedirs(scratch, exist_ok=True)
torch.save(recorded, f"{scratch}/in.pt")
child = f"""
import json
import torch
from safetensors.torch import load_file
from transformers.models.qwen3.configuration_qwen3 import Qwen3Config
from transformers.models.qwen3.modeling_qwen3 import Qwen3Model

te_dir, scratch = {qwen3 + "/text_encoder"!r}, {scratch!r}
with open(te_dir + "/config.json") as f:
    model = Qwen3Model(Qwen3Config(**json.load(f))).eval()
# Written as Qwen3ForCausalLM writes it (model. prefix), loaded strictly.
model.load_state_dict({{k[len("model."):]: v for k, v in load_file(te_dir + "/model.safetensors").items()}}, strict=True)
outputs = []
with torch.no_grad():
    for ids, mask in torch.load(scratch + "/in.pt"):
        outputs.append(model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False).hidden_states)
torch.save(outputs, scratch + "/out.pt")
"""
env = dict(os.environ, PYTHONPATH="tools/reference/pyenv-transformers:tools/reference/pyenv")
subprocess.run([sys.executable, "-c", child], check=True, env=env)
outputs = torch.load(f"{scratch}/out.pt")
for f in ("in.pt", "out.pt"):
    os.remove(f"{scratch}/{f}")
os.rmdir(scratch)
encoder.outputs = {key(ids, mask): states for (ids, mask), states in zip(recorded, outputs)}

out = {}
run_all(out)
save_file({k: v.contiguous().float() for k, v in out.items()}, f"{here}/expected.safetensors")
print(f"wrote {len(out)} tensors to {here}/expected.safetensors")
for name in CASES:
    print(f"{name}: latents {list(out[name + '.latents'].shape)}, max |latents| {out[name + '.latents'].abs().max().item():.4g}")
