"""diffusers' own Chroma transformer and pipelines on a tiny Chroma model: writes local-diffusers/chroma/.

Usage, from the repository root (see README.md for the environment; /tmp/reftf saved as described there):
    PYTHONPATH=tools/reference/pyenv:/tmp/refpy /usr/bin/python3 tools/reference/chroma.py tests/DiffusersSharp.Tests/Fixtures

Writes, under local-diffusers/chroma/:
- transformer/: a tiny ChromaTransformer2DModel (config below) with diffusers' own random initialisation after
  torch.manual_seed(0) (config.json by save_config, the weights as safetensors: save_pretrained needs a huggingface_hub
  dtype table that torch 1.13 breaks);
- scheduler/scheduler_config.json: a FlowMatchEulerDiscreteScheduler config with dynamic shifting (FLUX's values);
- expected.safetensors (float32; integer inputs stored as float):
  1. one transformer forward with a partial float attention mask (what the pipelines build), and one without a mask;
  2. ChromaPipeline / ChromaImg2ImgPipeline runs with text_encoder=None, given prompt embeddings and attention masks
     drawn here: every step's latents (callback_on_step_end), the final packed latents (output_type "latent") and the
     decoded image (output_type "np");
  3. one ChromaPipeline run from prompts through the pipeline's own _get_t5_prompt_embeds: the tokenizer is a stand-in
     that returns transformers' T5TokenizerFast ids of tiny-sd3's tokenizer_3 for the prompt (tiny-sd3/tokenizers.json,
     padded to 256) with transformers' attention mask (1 up to </s>, 0 on the padding), and the text encoder is a
     stand-in that returns transformers' OWN T5EncoderModel output (tiny-sd3's text_encoder_3, run in a child process
     with tools/reference/pyenv-transformers) for exactly the ids and mask it is given;
  4. _get_t5_prompt_embeds on four prompts: the ids and mask handed to T5, and the attention mask it returns.
- meta.json: the tiny config, the cases' arguments, and diffusers' parameter / tensor counts of the full-size
  ChromaTransformer2DModel (Chroma1-HD's config: the constructor defaults), built with every parameter moved to `meta`
  as it is registered (in a child process).
The VAE, the init image are tiny-sd3's (16 latent channels with shift_factor, like FLUX's VAE).
"""
import json
import os
import subprocess
import sys

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from diffusers import AutoencoderKL, ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.chroma.pipeline_chroma import ChromaPipeline
from diffusers.pipelines.chroma.pipeline_chroma_img2img import ChromaImg2ImgPipeline

root = sys.argv[1]
here = f"{root}/local-diffusers/chroma"

# 2 double + 2 single blocks, 2 heads x 16 (axes 4 + 6 + 6), T5 width 96 (tiny-sd3's text_encoder_3), a 2-layer
# approximator of width 48 over 16 input channels; out_dim = 3 * 2 + 12 * 2 + 2 = 32 modulation vectors.
config = dict(patch_size=1, in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
              joint_attention_dim=96, axes_dims_rope=(4, 6, 6), approximator_num_channels=16, approximator_hidden_dim=48,
              approximator_layers=2)
scheduler_config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256, "base_shift": 0.5,
                    "max_image_seq_len": 4096, "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 3.0,
                    "use_dynamic_shifting": True}
os.makedirs(f"{here}/scheduler", exist_ok=True)
with open(f"{here}/scheduler/scheduler_config.json", "w") as f:
    json.dump(scheduler_config, f, indent=2, sort_keys=True)
    f.write("\n")
torch.manual_seed(0)
model = ChromaTransformer2DModel(**config).eval()
model.save_config(f"{here}/transformer")
save_file({k: v.contiguous() for k, v in model.state_dict().items()},
          f"{here}/transformer/diffusion_pytorch_model.safetensors", metadata={"format": "pt"})
transformer = ChromaTransformer2DModel.from_pretrained(here, subfolder="transformer").eval()
vae = AutoencoderKL.from_pretrained(f"{root}/tiny-sd3/model", subfolder="vae").eval()
scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(here, subfolder="scheduler")
parts = dict(scheduler=scheduler, vae=vae, transformer=transformer, text_encoder=None, tokenizer=None)
t2i, i2i = ChromaPipeline(**parts), ChromaImg2ImgPipeline(**parts)
out = {}

# 1. Inputs, from one generator: prompt embeddings of 12 tokens with the masks _get_t5_prompt_embeds makes (a prompt of
# 5 tokens with </s> keeps 6: one padding token stays unmasked; the negative one 2 + 1), in the float dtype it gives them.
g = torch.Generator("cpu").manual_seed(20261130)
embeds, neg_embeds = torch.randn(1, 12, 96, generator=g), torch.randn(1, 12, 96, generator=g)
mask = torch.tensor([[1.0] * 6 + [0.0] * 6])
neg_mask = torch.tensor([[1.0] * 3 + [0.0] * 9])
out.update({"in.prompt_embeds": embeds, "in.prompt_attention_mask": mask, "in.negative_prompt_embeds": neg_embeds,
            "in.negative_prompt_attention_mask": neg_mask})

# One forward: batch 2, a 4 x 5 token latent, 12 text tokens, timesteps 1.0 and 0.3125; the mask keeps 7 text tokens of
# sample 0 and all of sample 1 (image tokens always), float as the pipelines pass it.
hidden, text = torch.randn(2, 20, 64, generator=g), torch.randn(2, 12, 96, generator=g)
timestep = torch.tensor([1.0, 0.3125])
img_ids, txt_ids = ChromaPipeline._prepare_latent_image_ids(1, 4, 5, "cpu", torch.float32), torch.zeros(12, 3)
tf_mask = torch.cat([torch.tensor([[1.0] * 7 + [0.0] * 5, [1.0] * 12]), torch.ones(2, 20)], dim=1)
with torch.no_grad():
    forward = transformer(hidden_states=hidden, encoder_hidden_states=text, timestep=timestep, img_ids=img_ids,
                          txt_ids=txt_ids, attention_mask=tf_mask, return_dict=False)[0]
    forward_nomask = transformer(hidden_states=hidden, encoder_hidden_states=text, timestep=timestep, img_ids=img_ids,
                                 txt_ids=txt_ids, return_dict=False)[0]
out.update({"tf.hidden_states": hidden, "tf.encoder_hidden_states": text, "tf.timestep": timestep, "tf.img_ids": img_ids,
            "tf.txt_ids": txt_ids, "tf.attention_mask": tf_mask, "tf.out": forward, "tf.out_nomask": forward_nomask})

# 3./4. transformers' own T5 (tiny-sd3's text_encoder_3) in a child process, on the tokenizer rows the stand-ins hand out.
with open(f"{root}/tiny-sd3/tokenizers.json", encoding="utf-8") as f:
    tokenizers = json.load(f)
prompts, rows = tokenizers["prompts"], tokenizers["tokenizer_3"]
MAX_LENGTH = 256  # the length tokenizers.json pads T5 ids to


def tokenizer_output(indices):
    """transformers' T5TokenizerFast(prompt, padding="max_length", max_length=256, truncation=True) for those prompts."""
    ids = torch.tensor([rows[i]["ids"] for i in indices], dtype=torch.long)
    kept = [min(rows[i]["untruncated_len"], MAX_LENGTH) for i in indices]
    return ids, torch.tensor([[1] * n + [0] * (MAX_LENGTH - n) for n in kept], dtype=torch.long)


PROMPT, NEGATIVE = 0, 1  # the teddy-bear prompt (27 tokens) and "pepperoni" (7)
TOK = [0, 2, 15, 5]  # 27 tokens, "" (</s> only), "word" x 300 (truncated to 256: nothing padded), 9 tokens
batches = {"pos": tokenizer_output([PROMPT]), "neg": tokenizer_output([NEGATIVE]), "tok": tokenizer_output(TOK)}
tmp = f"{here}/.t5_io.safetensors"
save_file({f"{k}.{part}": v for k, (ids, m) in batches.items() for part, v in (("ids", ids), ("mask", m))}, tmp)
t5_dir = f"{root}/tiny-sd3/model/text_encoder_3"
child = f"""
import json, torch
from safetensors.torch import load_file, save_file
from transformers.models.t5.configuration_t5 import T5Config
from transformers.models.t5.modeling_t5 import T5EncoderModel
with open({json.dumps(t5_dir + '/config.json')}) as f:
    model = T5EncoderModel(T5Config(**json.load(f))).eval()
weights = load_file({json.dumps(t5_dir + '/model.safetensors')})
weights["encoder.embed_tokens.weight"] = weights["shared.weight"]  # tied in T5EncoderModel
model.load_state_dict(weights, strict=True)
x = load_file({json.dumps(tmp)})
with torch.no_grad():
    save_file({{k: model(input_ids=x[k + ".ids"], attention_mask=x[k + ".mask"]).last_hidden_state.contiguous()
               for k in {json.dumps(list(batches))}}}, {json.dumps(tmp)})
"""
subprocess.run([sys.executable, "-c", child], check=True,
               env=dict(os.environ, PYTHONPATH="tools/reference/pyenv-transformers:tools/reference/pyenv"))
encoded = load_file(tmp)
os.remove(tmp)


class T5TokenizerStandIn:
    """transformers' T5TokenizerFast ids and mask of tiny-sd3's tokenizer_3 (tokenizers.json) for the prompts given."""

    added_tokens_encoder = {}  # no textual inversion tokens: maybe_convert_prompt leaves the prompts as they are

    def tokenize(self, prompt):
        return prompt.split()

    def __call__(self, prompt, padding, max_length, truncation, return_length, return_overflowing_tokens, return_tensors):
        assert (padding, max_length, truncation, return_tensors) == ("max_length", MAX_LENGTH, True, "pt")
        ids, m = tokenizer_output([prompts.index(p) for p in prompt])
        return type("BatchEncoding", (), {"input_ids": ids, "attention_mask": m})()


class T5EncoderStandIn(torch.nn.Module):
    """Returns the child's T5 last_hidden_state for exactly the ids and mask it encoded, and records the calls."""

    dtype, device = torch.float32, torch.device("cpu")  # what the pipeline reads of a text encoder

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, input_ids, output_hidden_states=False, attention_mask=None):
        for name, (ids, m) in batches.items():
            if ids.shape == input_ids.shape and torch.equal(ids, input_ids) and torch.equal(m, attention_mask):
                self.calls.append((input_ids, attention_mask))
                return (encoded[name],)
        raise AssertionError("ids or mask the child did not encode")


encoder = T5EncoderStandIn()
text_parts = dict(parts, text_encoder=encoder, tokenizer=T5TokenizerStandIn())
t2i_text = ChromaPipeline(**text_parts)

# 4. _get_t5_prompt_embeds: the T5 inputs and the mask it returns (one padding token unmasked), 2 images per prompt.
with torch.no_grad():
    _, tok_mask = t2i_text._get_t5_prompt_embeds([prompts[i] for i in TOK], num_images_per_prompt=2, max_sequence_length=MAX_LENGTH)
out.update({"tok.prompt_index": torch.tensor(TOK, dtype=torch.float32), "tok.input_ids": encoder.calls[-1][0].float(),
            "tok.t5_attention_mask": encoder.calls[-1][1].float(), "tok.attention_mask": tok_mask})

# 2./3. Pipeline runs.
image = Image.open(f"{root}/tiny-sd3/init_image.png").convert("RGB")
given = dict(prompt_embeds=embeds, prompt_attention_mask=mask)
negative = dict(negative_prompt_embeds=neg_embeds, negative_prompt_attention_mask=neg_mask)
cases = {
    # CFG 5.0 (the default) with the negative embeddings, 64 high x 80 wide, 4 steps.
    "t2i": (t2i, dict(**given, **negative, height=64, width=80, num_inference_steps=4), 42),
    # No CFG (guidance 1): one pass per step, 48 x 64, 3 steps.
    "t2i_nocfg": (t2i, dict(**given, height=48, width=64, num_inference_steps=3, guidance_scale=1.0), 7),
    # Custom sigmas (the request's own schedule; mu still from the token count), CFG 3.0, 64 x 64.
    "t2i_sigmas": (t2i, dict(**given, **negative, height=64, width=64, sigmas=[1.0, 0.8, 0.5, 0.2], guidance_scale=3.0), 11),
    # From prompts through _get_t5_prompt_embeds (stand-in tokenizer, transformers' T5), the negative prompt
    # encoded the same way, 2 images per prompt, CFG 4.0, 64 x 64, 3 steps, max_sequence_length 256.
    "prompt": (t2i_text, dict(prompt=prompts[PROMPT], negative_prompt=prompts[NEGATIVE], num_images_per_prompt=2,
                              max_sequence_length=MAX_LENGTH, height=64, width=64, num_inference_steps=3, guidance_scale=4.0), 123),
    # Image-to-image: strength 0.6 of 10 steps (6 run), CFG 5.0 with the negative embeddings, 64 x 64.
    "i2i": (i2i, dict(**given, **negative, image=image, strength=0.6, num_inference_steps=10, height=64, width=64), 123456),
    # Image-to-image at the default strength 0.9 of 5 steps (int(5 - 4.5) = 0: all 5 run), no CFG, 64 high x 80 wide.
    "i2i_default": (i2i, dict(**given, image=image, num_inference_steps=5, guidance_scale=1.0, height=64, width=80), 5),
}
for name, (pipe, args, seed) in cases.items():
    def on_step_end(p, i, t, kw, name=name):
        out[f"{name}.step{i}.latents"] = kw["latents"].clone()
        return kw
    with torch.no_grad():
        # output_type "latent" gives the packed latents [B, tokens, 64]; "np" the decoded image, NHWC in [0, 1].
        out[f"{name}.latents"] = pipe(**args, output_type="latent", callback_on_step_end=on_step_end,
                                      generator=torch.Generator("cpu").manual_seed(seed)).images
        out[f"{name}.image"] = torch.from_numpy(pipe(**args, output_type="np",
                                                     generator=torch.Generator("cpu").manual_seed(seed)).images)
# What the prompt case's T5 returned (its transformer inputs before the repeat for 2 images).
out["prompt.prompt_embeds"], out["prompt.negative_prompt_embeds"] = encoded["pos"], encoded["neg"]

save_file({k: v.contiguous().float() for k, v in sorted(out.items())}, f"{here}/expected.safetensors")
print(f"wrote {len(out)} tensors to {here}/expected.safetensors")

# Full-size counts: Chroma1-HD's config (the constructor defaults), every parameter moved to meta as it is registered.
counter = """
import json
from torch import nn
_register = nn.Module.register_parameter
def _on_meta(self, name, p):
    if p is not None and p.device.type != "meta":
        p = nn.Parameter(p.detach().to("meta"), p.requires_grad)
    _register(self, name, p)
nn.Module.register_parameter = _on_meta
from diffusers import ChromaTransformer2DModel
model = ChromaTransformer2DModel()
print(json.dumps({"parameters": sum(p.numel() for p in model.parameters()), "tensors": len(model.state_dict()),
                  "buffers": sum(b.numel() for b in model.buffers())}))
"""
counts = json.loads(subprocess.run([sys.executable, "-c", counter], check=True, capture_output=True, text=True,
                                   env=dict(os.environ)).stdout.strip().splitlines()[-1])
print("full size:", counts)
meta = {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
        "cases": {name: {k: (v if isinstance(v, (int, float, str, list)) else k) for k, v in args.items()
                         if not isinstance(v, torch.Tensor) and k != "image"} | {"seed": seed}
                  for name, (_, args, seed) in cases.items()},
        "full_size": {"config": "ChromaTransformer2DModel() defaults (Chroma1-HD)", **counts}}
with open(f"{here}/meta.json", "w") as f:
    json.dump(meta, f, indent=2, sort_keys=True)
    f.write("\n")
