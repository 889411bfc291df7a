# The diffusers half of the FLUX.1 microbenchmark (Flux.cs; tools/gpu/README.md): the same lines, with PyTorch's
# functions and diffusers' modules, in the layouts diffusers' Flux attention uses. Usage:
#   python3 flux.py [DEVICE] [ITERATIONS] [IMAGE_TOKENS] [TEXT_TOKENS]   (DIFFUSERS_SRC: the folder holding diffusers)
# On the CPU the 57-block chain and the 12 B-parameter model are skipped, as in Flux.cs.
import json, math, os, sys, time
sys.path.insert(0, os.environ.get("DIFFUSERS_SRC", "/tmp/dsrc"))
import torch
import torch.nn.functional as F
dev = sys.argv[1] if len(sys.argv) > 1 else "cuda"
iters = int(sys.argv[2]) if len(sys.argv) > 2 else 20
N = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
S = int(sys.argv[4]) if len(sys.argv) > 4 else 256
D, H, Hd = 3072, 24, 128
MLP = 4 * D
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
x, ctx, temb = R(1, N, D), R(1, S, D), R(1, D)
joint = R(1, N + S, D)
wq, bq = R(D, D).mul_(0.05), R(D)
w1, b1 = R(MLP, D).mul_(0.05), R(MLP)
w2, b2 = R(D, MLP).mul_(0.05), R(D)
wn, bn = R(6 * D, D).mul_(0.05), R(6 * D)
wo, bo = R(D, D + MLP).mul_(0.05), R(D)
wide = R(1, N + S, MLP)
attn_out = R(1, N + S, D)
T("linear_qkv", lambda: F.linear(x, wq, bq))
T("linear_ff1", lambda: F.linear(x, w1, b1))
T("linear_ff2", lambda: F.linear(wide[:, :N], w2, b2))
T("linear_norm1", lambda: F.linear(F.silu(temb), wn, bn))
T("linear_mlp_joint", lambda: F.linear(joint, w1, b1))
T("linear_proj_out", lambda: F.linear(torch.cat([attn_out, wide], dim=2), wo, bo))
T("cat_attn_mlp", lambda: torch.cat([attn_out, wide], dim=2))
T("gelu_tanh", lambda: F.gelu(wide, approximate="tanh"))
from diffusers.models.normalization import RMSNorm
# diffusers' Flux attention keeps the heads in [B, S, H, D] (unflatten), norms and rotates them there.
heads = R(1, N + S, H, Hd)
rn = RMSNorm(Hd, eps=1e-6).to(dev, bf)
T("rmsnorm_heads", lambda: rn(heads))
from diffusers.models.transformers.transformer_flux import FluxPosEmbed, FluxTransformerBlock, FluxSingleTransformerBlock
from diffusers.models.embeddings import apply_rotary_emb
side = int(math.sqrt(N))
rows = torch.arange(side).float()[:, None].expand(side, N // side)
cols = torch.arange(N // side).float()[None, :].expand(side, N // side)
img_ids = torch.stack([torch.zeros(side, N // side), rows, cols], -1).reshape(N, 3).to(dev, bf)
txt_ids = torch.zeros(S, 3, dtype=bf, device=dev)
ids = torch.cat([txt_ids, img_ids], 0)
pos_embed = FluxPosEmbed(theta=10000, axes_dim=[16, 56, 56])
T("rotary_table", lambda: pos_embed(ids))
rotary = pos_embed(ids)
T("rotary_apply", lambda: apply_rotary_emb(heads, rotary, sequence_dim=1))
heads_t = heads.transpose(1, 2)  # what reaches SDPA
T("sdpa_joint", lambda: F.scaled_dot_product_attention(heads_t, heads_t, heads_t))
def filled(m):
    m = m.to(dev, bf).eval()
    for p in m.parameters(): p.normal_(0, 0.02)
    return m
dual = filled(FluxTransformerBlock(dim=D, num_attention_heads=H, attention_head_dim=Hd))
single = filled(FluxSingleTransformerBlock(dim=D, num_attention_heads=H, attention_head_dim=Hd))
T("block_dual", lambda: dual(hidden_states=x, encoder_hidden_states=ctx, temb=temb, image_rotary_emb=rotary))
T("block_single", lambda: single(hidden_states=x, encoder_hidden_states=ctx, temb=temb, image_rotary_emb=rotary))
T("attn_dual", lambda: dual.attn(hidden_states=x, encoder_hidden_states=ctx, image_rotary_emb=rotary))
if dev == "cpu":
    sys.exit(0)

def chain():
    h, c = x, ctx
    for i in range(57):
        block = dual if i < 19 else single
        c, h = block(hidden_states=h, encoder_hidden_states=c, temb=temb, image_rotary_emb=rotary)
    return h
T("chain57", chain)
from diffusers import FluxTransformer2DModel
with torch.device("meta"):
    model = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=False, axes_dims_rope=(16, 56, 56))
model = model.to_empty(device=dev).to(bf).eval()
for t in list(model.parameters()) + list(model.buffers()): t.normal_(0, 0.02)
latents, text, pooled = R(1, N, 64), R(1, S, 4096), R(1, 768)
timestep = torch.full((1,), 0.5, dtype=bf, device=dev)
T("model_forward", lambda: model(hidden_states=latents, encoder_hidden_states=text, pooled_projections=pooled, timestep=timestep,
                                 img_ids=img_ids, txt_ids=txt_ids, return_dict=False)[0])
