# Times diffusers' FluxPipeline with random weights at full size (or a folder's configs): the side-by-side reference
# of `diffusers bench --random-weights flux.1-schnell|flux.1-dev`. Our own script.
# Needs diffusers' source on the path: DIFFUSERS_SRC=<folder holding the diffusers package>.
# Defaults as diffusers' docs run them: FLUX.1-dev 1024x1024, 50 steps, guidance 3.5, 512 T5 tokens; FLUX.1-schnell
# 1024x1024, 4 steps, no guidance, 256 T5 tokens. Batch 1 throughout: Flux has no CFG (dev embeds the guidance).
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baseline_common import parse_args, random_model, params, Timer, versions, free, report
import torch

a = parse_args("diffusers Flux.1 baseline", ["flux.1-schnell", "flux.1-dev"],
               lambda p: p.add_argument("--max-sequence-length", type=int, help="T5 tokens (default 512 for dev, 256 for schnell)"))
import diffusers
from diffusers import FluxTransformer2DModel, AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline
versions()

CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, projection_dim=768,
              hidden_act="quick_gelu", vocab_size=49408)
T5_XXL = dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, feed_forward_proj="gated-gelu", vocab_size=32128)
if a.model in ("flux.1-schnell", "flux.1-dev"):  # black-forest-labs' configs (the transformer's are its defaults)
    dev_model = a.model == "flux.1-dev"
    tr_cfg = dict(guidance_embeds=dev_model)
    vae_cfg = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                   block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=16, norm_num_groups=32, sample_size=1024,
                   scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0 if dev_model else 1.0, use_dynamic_shifting=dev_model,
                                            base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    clip_cfg, t5_cfg = CLIP_L, T5_XXL
else:  # a pipeline folder: its configs
    tr_cfg = FluxTransformer2DModel.load_config(a.model, subfolder="transformer")
    vae_cfg = AutoencoderKL.load_config(a.model, subfolder="vae")
    sched = FlowMatchEulerDiscreteScheduler.from_config(FlowMatchEulerDiscreteScheduler.load_config(a.model, subfolder="scheduler"))
    clip_cfg, t5_cfg = os.path.join(a.model, "text_encoder"), os.path.join(a.model, "text_encoder_2")

dev, dt = a.device, a.dt
tr = random_model(lambda: FluxTransformer2DModel.from_config(tr_cfg), dev, dt)
vae = random_model(lambda: AutoencoderKL.from_config(vae_cfg), dev, dt)
guided = tr.config.guidance_embeds
H, W = a.height or 1024, a.width or 1024
steps = a.steps or (50 if guided else 4)
guidance = a.guidance if a.guidance is not None else (3.5 if guided else 0.0)
L = a.max_sequence_length or (512 if guided else 256)
print("transformer params %.3fB" % (params(tr) / 1e9), "vae params %.1fM" % (params(vae) / 1e6),
      f"{W}x{H} {steps} steps guidance {guidance if guided else 'none'} {L} T5 tokens", flush=True)
res = {"transformer_params": params(tr), "vae_params": params(vae)}
pipe = FluxPipeline(scheduler=sched, vae=vae, text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=tr)
timer = Timer(dev, a.warmup, a.runs)
pe = torch.randn(1, L, tr.config.joint_attention_dim, device=dev, dtype=dt)
pp = torch.randn(1, tr.config.pooled_projection_dim, device=dev, dtype=dt)
lh, lw = H // pipe.vae_scale_factor, W // pipe.vae_scale_factor
with torch.inference_mode():
    x = torch.randn(1, (lh // 2) * (lw // 2), tr.config.in_channels, device=dev, dtype=dt)
    img_ids = FluxPipeline._prepare_latent_image_ids(1, lh // 2, lw // 2, dev, dt)
    txt_ids = torch.zeros(L, 3, device=dev, dtype=dt)
    g = torch.tensor([guidance], device=dev) if guided else None
    ts = torch.tensor([0.5], device=dev, dtype=dt)  # the pipeline passes t / 1000
    res["transformer_step_b1_ms"] = timer.median_ms(lambda: tr(hidden_states=x, timestep=ts, guidance=g, pooled_projections=pp,
        encoder_hidden_states=pe, txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0])
    z = torch.randn(1, vae.config.latent_channels, lh, lw, device=dev, dtype=dt)
    res["vae_decode_ms"] = timer.median_ms(lambda: vae.decode(z, return_dict=False)[0])
    timer.reset_peak()
    call = lambda: pipe(prompt_embeds=pe, pooled_prompt_embeds=pp, height=H, width=W, num_inference_steps=steps, guidance_scale=guidance,
                        max_sequence_length=L, generator=torch.Generator(dev).manual_seed(a.seed), output_type="pil")
    res["pipeline_s"] = timer.median_ms(call) / 1e3
    res["pipeline_it_per_s"] = steps / res["pipeline_s"]
    res["pipeline_peak_mem_GiB"] = timer.peak_gib()
del pipe, tr, vae; free()
if a.no_text_encoders:
    print("text encoders skipped (--no-text-encoders)", flush=True)
else:
    from transformers import CLIPTextModel, CLIPTextConfig, T5EncoderModel, T5Config
    def config(cls, c): return cls.from_pretrained(c) if isinstance(c, str) else cls(**c)
    # One at a time, after the pipeline is gone: T5-XXL alone is 9.5 GB in bf16.
    for name, key, model_cls, cfg_cls, cfg, n in (("text_encoder", "clipl_b1_ms", CLIPTextModel, CLIPTextConfig, clip_cfg, 77),
                                                 ("text_encoder_2", f"t5xxl_b1_{L}_ms", T5EncoderModel, T5Config, t5_cfg, L)):
        c = config(cfg_cls, cfg)
        m = random_model(lambda: model_cls(c), dev, dt)
        res[name + "_params"] = params(m)
        with torch.inference_mode():
            ids = torch.randint(0, c.vocab_size, (1, n), device=dev)
            res[key] = timer.median_ms(lambda: m(ids, output_hidden_states=False))
        del m; free()
report(res)
