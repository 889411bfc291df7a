// SD3.5-Medium's transformer pieces at full size (batch 2, 1024x1024: 4096 image + 333 text tokens, width 1536, bf16),
// each timed alone: the primitives one block is made of, then our layers and blocks. microbench.py times the same
// with PyTorch and diffusers' modules, line for line, so the two outputs paste side by side.
// Usage: microbench [DEVICE=cuda] [ITERATIONS=20] [IMAGE_TOKENS=4096] [TEXT_TOKENS=333]; `microbench flux ...`: Flux.cs
using System.Diagnostics;
using DiffusersSharp.Models.Layers;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

if (args.Length > 0 && args[0] == "flux")
{
    FluxMicrobench.Run(args[1..]); // Flux.cs
    return;
}
var device = TorchDevices.Parse(args.Length > 0 ? args[0] : "cuda");
if (device.type == DeviceType.CUDA) TorchDevices.EnsureCuda();
int iterations = args.Length > 1 ? int.Parse(args[1]) : 20;
long B = 2, N = args.Length > 2 ? long.Parse(args[2]) : 4096, S = args.Length > 3 ? long.Parse(args[3]) : 333;
const long D = 1536, H = 24, Hd = 64;
var bf = ScalarType.BFloat16;
using var inference = inference_mode();

void Sync() { if (device.type == DeviceType.CUDA) cuda.synchronize(device); }
void Time(string name, Func<Tensor?> run)
{
    for (int i = 0; i < 3; i++) { using var warm = NewDisposeScope(); run(); }
    Sync();
    var clock = Stopwatch.StartNew();
    for (int i = 0; i < iterations; i++) { using var scope = NewDisposeScope(); run(); }
    Sync();
    Console.WriteLine($"{{\"name\": \"{name}\", \"ms\": {clock.Elapsed.TotalMilliseconds / iterations:F4}}}");
}
Tensor R(params long[] shape) => randn(shape, dtype: bf, device: device).mul_(0.5);

var x = R(B, N, D); var ctx = R(B, S, D); var temb = R(B, D);
var wq = R(D, D).mul_(0.05); var bq = R(D);
var w1 = R(4 * D, D).mul_(0.05); var b1 = R(4 * D);
var w2 = R(D, 4 * D).mul_(0.05); var b2 = R(D);
var wa = R(9 * D, D).mul_(0.05); var ba = R(9 * D);
var wide = R(B, N, 4 * D);
var joint = R(B, N + S, D);
// TorchSharp's functional linear (matmul, then the bias) beside ours (at::linear: one addmm).
Time("torchsharp_linear_qkv", () => nn.functional.linear(x, wq, bq));
Time("linear_qkv", () => Linear.Apply(x, wq, bq));
Time("linear_ff1", () => Linear.Apply(x, w1, b1));
Time("linear_ff2", () => Linear.Apply(wide, w2, b2));
Time("linear_ada", () => Linear.Apply(nn.functional.silu(temb), wa, ba));
Time("linear_out_narrow", () => Linear.Apply(joint.narrow(1, 0, N), wq, bq));
Time("gelu_tanh", () => nn.functional.gelu(wide, TorchSharp.Modules.GELU.Approximate.tanh));
Time("layer_norm", () => nn.functional.layer_norm(x, [D], eps: 1e-6));
var q = Linear.Apply(x, wq, bq).view(B, N, H, Hd).transpose(1, 2);
var rms = new RMSNorm(Hd, 1e-6, device, bf);
Time("rmsnorm", () => rms.forward(q));
var qj = R(B, H, N + S, Hd); var kj = R(B, H, N + S, Hd); var vj = R(B, H, N + S, Hd);
Time("sdpa_joint", () => nn.functional.scaled_dot_product_attention(qj, kj, vj));
var k = Linear.Apply(x, wq, bq).view(B, N, H, Hd).transpose(1, 2);
Time("sdpa_self_strided", () => nn.functional.scaled_dot_product_attention(q, k, q));
var bias = zeros(1, 1, 1, N + S, dtype: bf, device: device);
Time("sdpa_joint_additive_mask", () => nn.functional.scaled_dot_product_attention(qj, kj, vj, bias));
var cq = R(B, S, D).view(B, S, H, Hd).transpose(1, 2);
Time("cat_heads", () => torch.cat([q, cq], 2));
var scale = R(B, D); var shift = R(B, D);
Time("modulate", () => nn.functional.layer_norm(x, [D], eps: 1e-6) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1));
Time("residual", () => x + scale.unsqueeze(1) * x);
Time("heads_to_tokens", () => qj.transpose(1, 2).reshape(B, -1, H * Hd).to(bf));

void Fill(nn.Module module)
{
    using var noGrad = no_grad();
    foreach (var (_, p) in module.named_parameters()) p.normal_(0, 0.02);
}
T Filled<T>(T module) where T : nn.Module { Fill(module); return module; }
var dual = Filled(new JointTransformerBlock(D, (int)H, (int)Hd, contextPreOnly: false, qkRmsNorm: true, useDualAttention: true, device, bf));
var plain = Filled(new JointTransformerBlock(D, (int)H, (int)Hd, contextPreOnly: false, qkRmsNorm: true, useDualAttention: false, device, bf));
var last = Filled(new JointTransformerBlock(D, (int)H, (int)Hd, contextPreOnly: true, qkRmsNorm: true, useDualAttention: false, device, bf));
Time("block_dual", () => dual.forward(x, ctx, temb).X);
Time("block_plain", () => plain.forward(x, ctx, temb).X);
Time("block_last", () => last.forward(x, ctx, temb).X);
var jointAttention = Filled(new JointAttention(D, (int)H, (int)Hd, joint: true, contextPreOnly: false, qkRmsNorm: true, device, bf));
Time("attn_joint", () => jointAttention.forward(x, ctx).X);
var selfAttention = Filled(new JointAttention(D, (int)H, (int)Hd, joint: false, contextPreOnly: false, qkRmsNorm: true, device, bf));
Time("attn_self", () => selfAttention.forward(x, null).X);
var ff = Filled(new FeedForward(D, activationFn: "gelu-approximate", device: device, dtype: bf));
Time("ff", () => ff.forward(x));
var norm1 = Filled(new SD35AdaLayerNormZeroX(D, device, bf));
Time("norm1_dual", () => norm1.forward(x, temb).X);

// The 24 blocks chained as SD3Transformer2DModel runs them (13 dual, 10 plain, the last context-pre-only; a dispose scope
// per block), from a contiguous stream and from one laid out as PatchEmbed leaves it (the conv's channels-first memory
// seen through flatten(2).transpose(1, 2)), then the whole model: where the forward spends time outside its blocks.
var blocks = Enumerable.Range(0, 24).Select(i => i == 23 ? last : i < 13 ? dual : plain).ToList();
Tensor Chain(Tensor stream)
{
    var (h, c) = (stream, ctx);
    foreach (var block in blocks)
    {
        using var blockScope = NewDisposeScope();
        var (nextContext, next) = block.forward(h, c, temb);
        h = next.MoveToOuterDisposeScope();
        if (nextContext is not null) c = nextContext.MoveToOuterDisposeScope();
    }
    return h;
}
Time("chain24_contiguous", () => Chain(x));
var channelsFirst = R(B, D, N).transpose(1, 2);
Time("chain24_channels_first", () => Chain(channelsFirst));
var config = DiffusersSharp.Benchmarks.PipelineConfigs.StableDiffusion35Medium.Transformer;
using var model = new SD3Transformer2DModel(config, new Device(DeviceType.META), bf);
DiffusersSharp.Benchmarks.RandomWeights.Fill(model, device);
long side = (long)Math.Sqrt(N) * 2;
var latents = R(B, 16, side, side); var text = R(B, S, 4096); var pooled = R(B, 2048);
var timestep = full(B, 500f, device: device);
Time("model_forward", () => model.forward(latents, text, pooled, timestep));
