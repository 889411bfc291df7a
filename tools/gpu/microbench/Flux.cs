// FLUX.1's transformer pieces at full size (batch 1, 1024x1024: 4096 image + 256 text tokens, width 3072, 24 heads of
// 128, bf16), each timed alone as Program.cs times SD3.5's: the primitives of its blocks, the rotary table and its
// application, a dual and a single block, the 19 + 38 blocks chained, and the whole FLUX.1-schnell transformer.
// flux.py times the same with PyTorch and diffusers' modules, line for line. Usage: microbench flux [DEVICE=cuda]
// [ITERATIONS=20] [IMAGE_TOKENS=4096] [TEXT_TOKENS=256] (on the CPU the chain and the model are skipped: 12 B parameters).
using System.Diagnostics;
using DiffusersSharp.Benchmarks;
using DiffusersSharp.Models.Layers;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

internal static class FluxMicrobench
{
    public static void Run(string[] args)
    {
        var device = TorchDevices.Parse(args.Length > 0 ? args[0] : "cuda");
        if (device.type == DeviceType.CUDA) TorchDevices.EnsureCuda();
        int iterations = args.Length > 1 ? int.Parse(args[1]) : 20;
        long N = args.Length > 2 ? long.Parse(args[2]) : 4096, S = args.Length > 3 ? long.Parse(args[3]) : 256;
        const long D = 3072, H = 24, Hd = 128, Mlp = 4 * D;
        var bf = ScalarType.BFloat16;
        using var inference = inference_mode();

        void Sync() { if (device.type == DeviceType.CUDA) cuda.synchronize(device); }
        void Time(string name, Func<object?> run)
        {
            for (int i = 0; i < 3; i++) { using var warm = NewDisposeScope(); run(); }
            Sync();
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < iterations; i++) { using var scope = NewDisposeScope(); run(); }
            Sync();
            Console.WriteLine($"{{\"name\": \"{name}\", \"ms\": {clock.Elapsed.TotalMilliseconds / iterations:F4}}}");
        }
        Tensor R(params long[] shape) => randn(shape, dtype: bf, device: device).mul_(0.5);

        var x = R(1, N, D); var ctx = R(1, S, D); var temb = R(1, D);
        var joint = R(1, N + S, D);
        var wq = R(D, D).mul_(0.05); var bq = R(D);
        var w1 = R(Mlp, D).mul_(0.05); var b1 = R(Mlp);
        var w2 = R(D, Mlp).mul_(0.05); var b2 = R(D);
        var wn = R(6 * D, D).mul_(0.05); var bn = R(6 * D);
        var wo = R(D, D + Mlp).mul_(0.05); var bo = R(D);
        var wide = R(1, N + S, Mlp);
        var attnOut = R(1, N + S, D);
        Time("linear_qkv", () => Linear.Apply(x, wq, bq));
        Time("linear_ff1", () => Linear.Apply(x, w1, b1));
        Time("linear_ff2", () => Linear.Apply(wide.narrow(1, 0, N), w2, b2));
        Time("linear_norm1", () => Linear.Apply(nn.functional.silu(temb), wn, bn));
        Time("linear_mlp_joint", () => Linear.Apply(joint, w1, b1));
        Time("linear_proj_out", () => Linear.Apply(torch.cat([attnOut, wide], 2), wo, bo));
        Time("cat_attn_mlp", () => torch.cat([attnOut, wide], 2));
        Time("gelu_tanh", () => nn.functional.gelu(wide, TorchSharp.Modules.GELU.Approximate.tanh));
        var heads = R(1, H, N + S, Hd);
        var rms = new RMSNorm(Hd, 1e-6, device, bf);
        Time("rmsnorm_heads", () => rms.forward(heads));
        var ids = torch.cat([zeros([S, 3], dtype: bf, device: device),
            FluxPipelineBase.LatentImageIds((int)Math.Sqrt(N), (int)(N / (int)Math.Sqrt(N)), device, bf)], 0);
        var posEmbed = new FluxPosEmbed(10000, [16, 56, 56]);
        Time("rotary_table", () => posEmbed.forward(ids));
        var rotary = posEmbed.forward(ids);
        Time("rotary_apply", () => FluxPosEmbed.Apply(heads, rotary));
        Time("sdpa_joint", () => nn.functional.scaled_dot_product_attention(heads, heads, heads));

        void Fill(nn.Module module)
        {
            using var noGrad = no_grad();
            foreach (var (_, p) in module.named_parameters()) p.normal_(0, 0.02);
        }
        var dual = new FluxTransformerBlock(D, (int)H, (int)Hd, device, bf);
        Fill(dual);
        var single = new FluxSingleTransformerBlock(D, (int)H, (int)Hd, device: device, dtype: bf);
        Fill(single);
        Time("block_dual", () => dual.forward(x, ctx, temb, rotary).X);
        Time("block_single", () => single.forward(x, ctx, temb, rotary).X);
        var attention = new JointAttention(D, (int)H, (int)Hd, joint: true, contextPreOnly: false, qkRmsNorm: true, device, bf, contextFirst: true);
        Fill(attention);
        Time("attn_dual", () => attention.forward(x, ctx, rotary: rotary).X);
        if (device.type == DeviceType.CPU) return; // 57 blocks and 12 B parameters: the GPU only

        // The 19 dual and 38 single blocks chained as FluxTransformer2DModel runs them (a dispose scope per block).
        Tensor Chain()
        {
            var (h, c) = (x, ctx);
            for (int i = 0; i < 57; i++)
            {
                using var blockScope = NewDisposeScope();
                var (nextContext, next) = i < 19 ? dual.forward(h, c, temb, rotary) : single.forward(h, c, temb, rotary);
                h = next.MoveToOuterDisposeScope();
                c = nextContext.MoveToOuterDisposeScope();
            }
            return h;
        }
        Time("chain57", Chain);
        var config = FluxPipelineConfigs.FluxSchnell.Transformer;
        using var model = new FluxTransformer2DModel(config, new Device(DeviceType.META), bf);
        RandomWeights.Fill(model, device);
        var latents = R(1, N, config.InChannels); var text = R(1, S, config.JointAttentionDim); var pooled = R(1, config.PooledProjectionDim);
        var imageIds = ids.narrow(0, S, N); var textIds = ids.narrow(0, 0, S);
        var timestep = full([1], 0.5f, dtype: bf, device: device);
        Time("model_forward", () => model.forward(latents, text, pooled, timestep, imageIds, textIds));
    }
}
