"""diffusers' CPU activation peaks, counted by libmemtrack.so, for the same models and sizes as ours:

    LD_PRELOAD=$PWD/tools/memtrack/libmemtrack.so PYTHONPATH=tools/reference/pyenv:DIFFUSERS_SRC \
        python3 tools/memtrack/diffusers_peaks.py vae-decode|vae-encode|sd15-unet [SIZE]

Full-size SD3 VAE / SD 1.5 UNet (batch 2) configs, random weights (std 0.02), float32, 2 threads. Prints the peak above
the weights and inputs. The UNet's attention runs diffusers' SlicedAttnProcessor(1): under Debian's torch 1.13 the
reference environment's scaled_dot_product_attention materialises every head's attention map at once, which no current
PyTorch does; sliced, one head's map (and its softmax) stays in the count: 2 x tokens^2 x 4 bytes.
"""
import ctypes
import sys
import time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.models.attention_processor import SlicedAttnProcessor

counter = ctypes.CDLL(None)
counter.memtrack_live.restype = ctypes.c_long
counter.memtrack_peak.restype = ctypes.c_long
torch.set_num_threads(2)
what = sys.argv[1]
size = int(sys.argv[2]) if len(sys.argv) > 2 else 256


def random(model):
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.02)
    return model.eval()


if what.startswith("vae"):
    model = random(AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                                 up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
                                 layers_per_block=2, latent_channels=16, norm_num_groups=32, sample_size=1024,
                                 scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
                                 use_post_quant_conv=False))
    if what == "vae-decode":
        z = torch.randn(1, 16, size // 8, size // 8)
        run = lambda: model.decode(z).sample
    else:
        x = torch.randn(1, 3, size, size)
        run = lambda: model.encode(x).latent_dist.mean
elif what == "sd15-unet":
    model = random(UNet2DConditionModel(attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280],
                                        cross_attention_dim=768, in_channels=4, layers_per_block=2, out_channels=4,
                                        sample_size=64, down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                                        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3))
    model.set_attn_processor(SlicedAttnProcessor(1))
    x, text, t = torch.randn(2, 4, size // 8, size // 8), torch.randn(2, 77, 768), torch.tensor([999.0, 999.0])
    run = lambda: model(x, t, text).sample
else:
    sys.exit(f"unknown measure {what}: vae-decode, vae-encode or sd15-unet")

with torch.inference_mode():
    before = counter.memtrack_live()
    counter.memtrack_reset_peak()
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    print(f"diffusers {what} {size}x{size}: peak {(counter.memtrack_peak() - before) / 2**20:.0f} MiB above the weights "
          f"and inputs, {seconds:.1f} s (torch {torch.__version__})")
