# Times diffusers' StableDiffusionXLPipeline / StableDiffusionPipeline with random weights at full size (or a folder's
# configs): the side-by-side reference of `diffusers bench --random-weights sdxl-base|sd1.5`. Our own script.
# Needs diffusers' source on the path: DIFFUSERS_SRC=<folder holding the diffusers package>.
# Defaults as diffusers' docs run them: SDXL 1024x1024, 50 steps, guidance 5.0; SD 1.5 512x512, 50 steps, 7.5.
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baseline_common import parse_args, random_model, params, Timer, versions, free, report, on
import torch

a = parse_args("diffusers SDXL / SD 1.x baseline", ["sdxl-base", "sd1.5"])
import diffusers
from diffusers import UNet2DConditionModel, AutoencoderKL, StableDiffusionXLPipeline, StableDiffusionPipeline
versions()

VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
           block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4, norm_num_groups=32)
BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, steps_offset=1)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, projection_dim=768,
              hidden_act="quick_gelu", vocab_size=49408)
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32, projection_dim=1280,
              hidden_act="gelu", vocab_size=49408)
if a.model == "sdxl-base":  # stabilityai/stable-diffusion-xl-base-1.0's configs
    xl = True
    unet_cfg = dict(sample_size=128, in_channels=4, out_channels=4, down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], block_out_channels=[320, 640, 1280],
                    layers_per_block=2, attention_head_dim=[5, 10, 20], cross_attention_dim=2048, transformer_layers_per_block=[1, 2, 10],
                    use_linear_projection=True, addition_embed_type="text_time", addition_embed_type_num_heads=64,
                    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
    vae_cfg = dict(VAE, sample_size=1024, scaling_factor=0.13025)
    sched = diffusers.EulerDiscreteScheduler(**BETAS, timestep_spacing="leading", interpolation_type="linear", prediction_type="epsilon")
    te_cfgs = {"text_encoder": CLIP_L, "text_encoder_2": CLIP_G}
elif a.model == "sd1.5":  # stable-diffusion-v1-5's configs
    xl = False
    unet_cfg = dict(sample_size=64, in_channels=4, out_channels=4, attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280],
                    cross_attention_dim=768, layers_per_block=2,
                    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
    vae_cfg = dict(VAE, sample_size=512, scaling_factor=0.18215)
    sched = diffusers.PNDMScheduler(**BETAS, skip_prk_steps=True, set_alpha_to_one=False)
    te_cfgs = {"text_encoder": CLIP_L}
else:  # a pipeline folder: its configs
    index = diffusers.DiffusionPipeline.load_config(a.model)
    xl = "XL" in index["_class_name"]
    unet_cfg = UNet2DConditionModel.load_config(a.model, subfolder="unet")
    vae_cfg = AutoencoderKL.load_config(a.model, subfolder="vae")
    sched_cls = getattr(diffusers, index["scheduler"][1])
    sched = sched_cls.from_config(sched_cls.load_config(a.model, subfolder="scheduler"))
    te_cfgs = {n: os.path.join(a.model, n) for n in (["text_encoder", "text_encoder_2"] if xl else ["text_encoder"])
               if index.get(n, [None])[0] is not None}

dev, dt = a.device, a.dt
unet = random_model(lambda: UNet2DConditionModel.from_config(unet_cfg), dev, dt)
vae = random_model(lambda: AutoencoderKL.from_config(vae_cfg), dev, dt)
size = unet.config.sample_size * (2 ** (len(vae.config.block_out_channels) - 1))
H, W = a.height or size, a.width or size
steps, guidance = a.steps or 50, a.guidance if a.guidance is not None else (5.0 if xl else 7.5)
print("unet params %.3fB" % (params(unet) / 1e9), "vae params %.1fM" % (params(vae) / 1e6), f"{W}x{H} {steps} steps guidance {guidance}", flush=True)
res = {"unet_params": params(unet), "vae_params": params(vae)}
if xl:
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=unet, scheduler=sched)
else:
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=sched, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
timer = Timer(dev, a.warmup, a.runs)
cross = unet.config.cross_attention_dim
pooled_dim = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim if xl else 0
pe = torch.randn(1, 77, cross, device=dev, dtype=dt)
pp = torch.randn(1, pooled_dim, device=dev, dtype=dt) if xl else None
lh, lw = H // pipe.vae_scale_factor, W // pipe.vae_scale_factor
with torch.inference_mode():
    x = torch.randn(2, unet.config.in_channels, lh, lw, device=dev, dtype=dt); ts = torch.tensor([500., 500.], device=dev)
    extra = dict(added_cond_kwargs={"text_embeds": pp.repeat(2, 1), "time_ids": torch.tensor([[H, W, 0, 0, H, W]] * 2, device=dev, dtype=dt)}) if xl else {}
    res["unet_step_b2_ms"] = timer.median_ms(lambda: unet(x, ts, encoder_hidden_states=pe.repeat(2, 1, 1), return_dict=False, **extra)[0])
    z = torch.randn(1, vae.config.latent_channels, lh, lw, device=dev, dtype=dt)
    res["vae_decode_ms"] = timer.median_ms(lambda: vae.decode(z, return_dict=False)[0])
    timer.reset_peak()
    embeds = dict(prompt_embeds=pe, negative_prompt_embeds=pe)
    if xl: embeds.update(pooled_prompt_embeds=pp, negative_pooled_prompt_embeds=pp)
    call = lambda: pipe(**embeds, height=H, width=W, num_inference_steps=steps, guidance_scale=guidance,
                        generator=torch.Generator(dev).manual_seed(a.seed), output_type="pil")
    res["pipeline_s"] = timer.median_ms(call) / 1e3
    res["pipeline_it_per_s"] = steps / res["pipeline_s"]
    res["pipeline_peak_mem_GiB"] = timer.peak_gib()
del pipe, unet, vae; free()
if a.no_text_encoders:
    print("text encoders skipped (--no-text-encoders)", flush=True)
else:
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTextConfig
    def config(c): return CLIPTextConfig.from_pretrained(c) if isinstance(c, str) else CLIPTextConfig(**c)
    for name, key, cls in (("text_encoder", "clipl_b2_ms", CLIPTextModel), ("text_encoder_2", "clipg_b2_ms", CLIPTextModelWithProjection)):
        if name not in te_cfgs: continue
        cfg = config(te_cfgs[name])
        m = random_model(lambda: cls(cfg), dev, dt)
        res[name + "_params"] = params(m)
        with torch.inference_mode():
            ids = torch.randint(0, cfg.vocab_size, (2, cfg.max_position_embeddings), device=dev)
            res[key] = timer.median_ms(lambda: m(ids, output_hidden_states=xl))  # SDXL's encode_prompt asks for all hidden states
        del m; free()
report(res)
