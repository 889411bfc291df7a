# The diffusers half of the SD3.5 block microbenchmark (tools/gpu/README.md): the same lines as microbench/Program.cs,
# with PyTorch's functions and diffusers' modules. Usage: python3 microbench.py [DEVICE] [ITERATIONS] [IMAGE_TOKENS] [TEXT_TOKENS]
# (DIFFUSERS_SRC: the folder holding diffusers' source package).
import json, os, sys, time
sys.path.insert(0, os.environ.get("DIFFUSERS_SRC", "/tmp/dsrc"))
import torch
import torch.nn.functional as F
dev = sys.argv[1] if len(sys.argv) > 1 else "cuda"
iters = int(sys.argv[2]) if len(sys.argv) > 2 else 20
N = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
S = int(sys.argv[4]) if len(sys.argv) > 4 else 333
B, D, H, Hd = 2, 1536, 24, 64
bf = torch.bfloat16
torch.set_grad_enabled(False)
def sync():
    if dev.startswith("cuda"): torch.cuda.synchronize()
def T(name, f):
    for _ in range(3): f()
    sync(); t = time.perf_counter()
    for _ in range(iters): f()
    sync(); print(json.dumps({"name": name, "ms": round((time.perf_counter() - t) * 1000 / iters, 4)}), flush=True)
def R(*shape): return torch.randn(*shape, dtype=bf, device=dev).mul_(0.5)
x, ctx, temb = R(B, N, D), R(B, S, D), R(B, D)
wq, bq = R(D, D).mul_(0.05), R(D)
w1, b1 = R(4 * D, D).mul_(0.05), R(4 * D)
w2, b2 = R(D, 4 * D).mul_(0.05), R(D)
wa, ba = R(9 * D, D).mul_(0.05), R(9 * D)
wide = R(B, N, 4 * D); joint = R(B, N + S, D)
T("torchsharp_linear_qkv", lambda: torch.matmul(x, wq.t()).add_(bq))  # the C++ frontend's linear
T("linear_qkv", lambda: F.linear(x, wq, bq))
T("linear_ff1", lambda: F.linear(x, w1, b1))
T("linear_ff2", lambda: F.linear(wide, w2, b2))
T("linear_ada", lambda: F.linear(F.silu(temb), wa, ba))
T("linear_out_narrow", lambda: F.linear(joint[:, :N], wq, bq))
T("gelu_tanh", lambda: F.gelu(wide, approximate="tanh"))
T("layer_norm", lambda: F.layer_norm(x, (D,), eps=1e-6))
qv = F.linear(x, wq, bq).view(B, N, H, Hd).transpose(1, 2)
from diffusers.models.normalization import RMSNorm
rn = RMSNorm(Hd, eps=1e-6).to(dev, bf)
T("rmsnorm", lambda: rn(qv))
qj, kj, vj = R(B, H, N + S, Hd), R(B, H, N + S, Hd), R(B, H, N + S, Hd)
T("sdpa_joint", lambda: F.scaled_dot_product_attention(qj, kj, vj))
kv = F.linear(x, wq, bq).view(B, N, H, Hd).transpose(1, 2)
T("sdpa_self_strided", lambda: F.scaled_dot_product_attention(qv, kv, qv))
bias = torch.zeros(1, 1, 1, N + S, dtype=bf, device=dev)
T("sdpa_joint_additive_mask", lambda: F.scaled_dot_product_attention(qj, kj, vj, attn_mask=bias))
cq = R(B, S, D).view(B, S, H, Hd).transpose(1, 2)
T("cat_heads", lambda: torch.cat([qv, cq], 2))
sc, sh = R(B, D), R(B, D)
T("modulate", lambda: F.layer_norm(x, (D,), eps=1e-6) * (1 + sc[:, None]) + sh[:, None])
T("residual", lambda: x + sc.unsqueeze(1) * x)
T("heads_to_tokens", lambda: qj.transpose(1, 2).reshape(B, -1, H * Hd).to(bf))
from diffusers.models.attention import JointTransformerBlock
def block(pre_only, dual):
    b = JointTransformerBlock(dim=D, num_attention_heads=H, attention_head_dim=Hd, context_pre_only=pre_only,
                              qk_norm="rms_norm", use_dual_attention=dual).to(dev, bf).eval()
    for p in b.parameters(): p.normal_(0, 0.02)
    return b
dual, plain, last = block(False, True), block(False, False), block(True, False)
T("block_dual", lambda: dual(x, ctx, temb))
T("block_plain", lambda: plain(x, ctx, temb))
T("block_last", lambda: last(x, ctx, temb))
T("attn_joint", lambda: dual.attn(hidden_states=x, encoder_hidden_states=ctx))
T("attn_self", lambda: dual.attn2(hidden_states=x))
T("ff", lambda: dual.ff(x))
T("norm1_dual", lambda: dual.norm1(x, emb=temb))
try:
    print(json.dumps({"name": "torch", "version": torch.__version__, "sdp_flash": torch.backends.cuda.flash_sdp_enabled(), "sdp_cudnn": torch.backends.cuda.cudnn_sdp_enabled(), "sdp_mem": torch.backends.cuda.mem_efficient_sdp_enabled(), "bf16_reduced": torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction}))
except Exception as e:
    print("backend flags:", e)

# The 24 blocks chained as the model runs them, from a contiguous stream and from PatchEmbed's layout, then the model.
blocks = [last if i == 23 else dual if i < 13 else plain for i in range(24)]
def chain(stream):
    h, c = stream, ctx
    for block in blocks:
        c2, h = block(h, c, temb)
        if c2 is not None: c = c2
    return h
T("chain24_contiguous", lambda: chain(x))
channels_first = R(B, D, N).transpose(1, 2)
T("chain24_channels_first", lambda: chain(channels_first))
from diffusers import SD3Transformer2DModel
with torch.device("meta"):
    model = SD3Transformer2DModel(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
        num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
        out_channels=16, pos_embed_max_size=384, dual_attention_layers=tuple(range(13)), qk_norm="rms_norm")
model = model.to_empty(device=dev).to(bf).eval()
for t in list(model.parameters()) + list(model.buffers()): t.normal_(0, 0.02)
side = int(N ** 0.5) * 2
latents, text, pooled = R(B, 16, side, side), R(B, S, 4096), R(B, 2048)
timestep = torch.full((B,), 500.0, device=dev)
T("model_forward", lambda: model(hidden_states=latents, encoder_hidden_states=text, pooled_projections=pooled, timestep=timestep, return_dict=False)[0])
