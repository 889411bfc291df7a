using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Layers;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Tests.Models;

/// <summary>Tiny random Flux transformers for tests (there is no diffusers fixture for Flux).</summary>
internal static class TinyFlux
{
    /// <summary>2 double + 2 single blocks, 2 heads × 16, rotary axes [4, 6, 6]; text width 96 and pooled width 32 fit
    /// the tiny-sd3 fixture's T5 and CLIP-L.</summary>
    public static FluxTransformer2DModelConfig Config(bool guidance) => new()
    {
        NumLayers = 2, NumSingleLayers = 2, AttentionHeadDim = 16, NumAttentionHeads = 2, JointAttentionDim = 96,
        PooledProjectionDim = 32, GuidanceEmbeds = guidance, AxesDimsRope = [4, 6, 6],
    };

    /// <summary>A model with weights drawn from <paramref name="seed"/>.</summary>
    public static FluxTransformer2DModel Model(bool guidance, long seed = 0)
    {
        torch.manual_seed(seed);
        var model = new FluxTransformer2DModel(Config(guidance));
        model.eval();
        return model;
    }

    /// <summary>diffusers' <c>_prepare_latent_image_ids</c> for an h × w token grid: (0, row, column) per token.</summary>
    public static Tensor ImageIds(int h, int w)
    {
        var ids = new float[h * w * 3];
        for (int r = 0; r < h; r++)
            for (int c = 0; c < w; c++)
            {
                ids[(r * w + c) * 3 + 1] = r;
                ids[(r * w + c) * 3 + 2] = c;
            }
        return tensor(ids, [h * w, 3]);
    }
}

public class FluxTransformerTests(ITestOutputHelper output)
{
    private sealed record Inputs(Tensor Hidden, Tensor Text, Tensor Pooled, Tensor Timestep, Tensor ImgIds, Tensor TxtIds, Tensor? Guidance);

    /// <summary>Batch 2, a 3 × 4 token grid, 5 text tokens.</summary>
    private static Inputs RandomInputs(bool guidance, long seed = 1)
    {
        torch.manual_seed(seed);
        return new Inputs(randn(2, 12, 64), randn(2, 5, 96), randn(2, 32), tensor(new[] { 0.8f, 0.3f }),
            TinyFlux.ImageIds(3, 4), zeros(5, 3), guidance ? tensor(new[] { 3.5f, 3.5f }) : null);
    }

    private static Tensor Run(FluxTransformer2DModel model, Inputs x) =>
        model.forward(x.Hidden, x.Text, x.Pooled, x.Timestep, x.ImgIds, x.TxtIds, x.Guidance);

    [Fact]
    public void ConfigDefaultsAreTheDiffusersConstructorDefaults()
    {
        var c = ConfigJson.Parse<FluxTransformer2DModelConfig>("{}");
        Assert.Equal((1, 64, (int?)null, 19, 38), (c.PatchSize, c.InChannels, c.OutChannels, c.NumLayers, c.NumSingleLayers));
        Assert.Equal((128, 24, 4096, 768, false), (c.AttentionHeadDim, c.NumAttentionHeads, c.JointAttentionDim, c.PooledProjectionDim, c.GuidanceEmbeds));
        Assert.Equal([16, 56, 56], c.AxesDimsRope);
        var dev = ConfigJson.Parse<FluxTransformer2DModelConfig>("""{"guidance_embeds": true, "axes_dims_rope": [4, 6, 6], "attention_head_dim": 16}""");
        Assert.True(dev.GuidanceEmbeds);
        Assert.Equal([4, 6, 6], dev.AxesDimsRope);
    }

    /// <summary>
    /// Parameter count of diffusers' FluxTransformer2DModel, derived by hand from the module structure in
    /// transformer_flux.py / embeddings.py / normalization.py / attention.py (Linear(i, o) with bias = i·o + o; D = heads ×
    /// head_dim; torch.nn.RMSNorm(head_dim) = head_dim weights; LayerNorms without affine and FluxPosEmbed = 0):
    /// <list type="bullet">
    /// <item>x_embedder Linear(in, D); context_embedder Linear(joint, D)</item>
    /// <item>time_text_embed: timestep_embedder Linear(256, D) + Linear(D, D); guidance_embedder (guidance_embeds) the same;
    /// text_embedder (PixArtAlphaTextProjection) Linear(pooled, D) + Linear(D, D)</item>
    /// <item>FluxTransformerBlock: norm1, norm1_context Linear(D, 6D); attn to_q/k/v, add_q/k/v_proj, to_out.0, to_add_out
    /// 8 × Linear(D, D) + norm_q/k, norm_added_q/k 4 × head_dim; ff, ff_context Linear(D, 4D) + Linear(4D, D) each</item>
    /// <item>FluxSingleTransformerBlock: norm Linear(D, 3D); proj_mlp Linear(D, 4D); proj_out Linear(5D, D); attn to_q/k/v
    /// 3 × Linear(D, D) + norm_q/k 2 × head_dim (pre_only: no to_out)</item>
    /// <item>norm_out Linear(D, 2D); proj_out Linear(D, patch² × out)</item>
    /// </list>
    /// Keys: 2 per Linear, 1 per RMSNorm.
    /// </summary>
    private static (long Parameters, int Keys) DiffusersCount(FluxTransformer2DModelConfig c)
    {
        long d = c.InnerDim, h = c.AttentionHeadDim;
        static long Lin(long i, long o) => i * o + o;
        long embed = Lin(c.InChannels, d) + Lin(c.JointAttentionDim, d);
        long timeText = (Lin(256, d) + Lin(d, d)) * (c.GuidanceEmbeds ? 2 : 1) + Lin(c.PooledProjectionDim, d) + Lin(d, d);
        long doubleBlock = 2 * Lin(d, 6 * d) + 8 * Lin(d, d) + 4 * h + 2 * (Lin(d, 4 * d) + Lin(4 * d, d));
        long singleBlock = Lin(d, 3 * d) + Lin(d, 4 * d) + Lin(5 * d, d) + 3 * Lin(d, d) + 2 * h;
        long head = Lin(d, 2 * d) + Lin(d, (long)c.PatchSize * c.PatchSize * c.OutChannelsOrIn);
        long total = embed + timeText + c.NumLayers * doubleBlock + c.NumSingleLayers * singleBlock + head;
        int keys = 4 + (c.GuidanceEmbeds ? 12 : 8) + c.NumLayers * (2 * 2 + 8 * 2 + 4 + 2 * 4) + c.NumSingleLayers * (2 + 2 + 2 + 3 * 2 + 2) + 4;
        return (total, keys);
    }

    [Theory]
    // FLUX.1-schnell (the constructor defaults): 199,680 + 12,585,984 (embedders) + 22,032,384 (time_text_embed)
    // + 19 × 339,831,296 (double blocks) + 38 × 141,591,808 (single blocks) + 18,880,512 + 196,672 (norm_out, proj_out)
    // = 11,891,178,560. FLUX.1-dev adds guidance_embedder 786,432 + 3,072 + 9,437,184 + 3,072 = 10,229,760: 11,901,408,320.
    [InlineData("FLUX.1-schnell", false, 11_891_178_560L, 1156)]
    [InlineData("FLUX.1-dev", true, 11_901_408_320L, 1160)]
    public void FullSizeModelsHaveDiffusersParameterCounts(string name, bool guidance, long parameters, int keys)
    {
        var config = new FluxTransformer2DModelConfig { GuidanceEmbeds = guidance };
        Assert.Equal((parameters, keys), DiffusersCount(config)); // the literal is the hand derivation above
        using var model = new FluxTransformer2DModel(config, new Device(DeviceType.META));
        long elements = model.parameters().Sum(t => t.numel()) + model.buffers().Sum(t => t.numel());
        output.WriteLine($"{name}: {elements:N0} parameters, {model.state_dict().Count} keys");
        Assert.Equal(parameters, elements);
        Assert.Equal(keys, model.state_dict().Count);
        Assert.All(model.parameters(), t => Assert.Equal(DeviceType.META, t.device_type));
        var sd = model.state_dict();
        foreach (var key in new[]
        {
            "x_embedder.weight", "context_embedder.bias", "time_text_embed.timestep_embedder.linear_2.weight", "time_text_embed.text_embedder.linear_1.weight",
            "transformer_blocks.18.norm1.linear.weight", "transformer_blocks.0.norm1_context.linear.bias", "transformer_blocks.0.attn.to_q.weight",
            "transformer_blocks.0.attn.norm_q.weight", "transformer_blocks.0.attn.norm_added_k.weight", "transformer_blocks.0.attn.add_v_proj.bias",
            "transformer_blocks.0.attn.to_out.0.weight", "transformer_blocks.0.attn.to_add_out.weight", "transformer_blocks.0.ff.net.0.proj.weight",
            "transformer_blocks.0.ff_context.net.2.bias", "single_transformer_blocks.37.norm.linear.weight", "single_transformer_blocks.0.proj_mlp.weight",
            "single_transformer_blocks.0.proj_out.weight", "single_transformer_blocks.0.attn.to_k.bias", "single_transformer_blocks.0.attn.norm_k.weight",
            "norm_out.linear.weight", "proj_out.bias",
        })
            Assert.True(sd.ContainsKey(key), key);
        Assert.Equal(guidance, sd.ContainsKey("time_text_embed.guidance_embedder.linear_1.weight"));
        Assert.DoesNotContain(sd.Keys, k => k.StartsWith("single_transformer_blocks.0.attn.to_out", StringComparison.Ordinal));
        Assert.Equal(new long[] { 3072, 15360 }, sd["single_transformer_blocks.0.proj_out.weight"].shape);
    }

    [Fact]
    public void TinyConfigCountMatchesTheDerivation()
    {
        foreach (bool guidance in new[] { false, true })
        {
            using var model = new FluxTransformer2DModel(TinyFlux.Config(guidance), new Device(DeviceType.META));
            Assert.Equal(DiffusersCount(TinyFlux.Config(guidance)), (model.parameters().Sum(t => t.numel()), model.state_dict().Count));
        }
    }

    [Fact]
    public void RotaryTableMatchesAFloat64EvaluationOfTheFormula()
    {
        // Text ids 0; image ids (0, row, col) with large positions too, where float32 frequencies would be visibly off.
        int[] axes = [4, 6, 6];
        var ids = new float[,] { { 0, 0, 0 }, { 0, 0, 0 }, { 0, 1, 2 }, { 0, 63, 127 }, { 3, 2500, 4000 } };
        using var idTensor = tensor(ids);
        var (cos, sin) = new FluxPosEmbed(10000, axes).forward(idTensor);
        using (cos) using (sin)
        {
            Assert.Equal(ScalarType.Float32, cos.dtype);
            Assert.Equal(new long[] { 5, 16 }, cos.shape);
            var c = cos.data<float>().ToArray();
            var s = sin.data<float>().ToArray();
            double worst = 0, worst32 = 0;
            for (int row = 0; row < ids.GetLength(0); row++)
            {
                int col = 0;
                for (int axis = 0; axis < axes.Length; axis++)
                    for (int k = 0; k < axes[axis] / 2; k++)
                    {
                        double freq = 1.0 / Math.Pow(10000.0, 2.0 * k / axes[axis]);
                        double angle = ids[row, axis] * freq;
                        float freq32 = 1f / MathF.Pow(10000f, 2f * k / axes[axis]);
                        float angle32 = ids[row, axis] * freq32;
                        for (int rep = 0; rep < 2; rep++, col++) // each frequency fills two adjacent columns
                        {
                            worst = Math.Max(worst, Math.Abs(c[row * 16 + col] - Math.Cos(angle)));
                            worst = Math.Max(worst, Math.Abs(s[row * 16 + col] - Math.Sin(angle)));
                            worst32 = Math.Max(worst32, Math.Abs(MathF.Cos(angle32) - Math.Cos(angle)));
                        }
                    }
            }
            output.WriteLine($"max |ours - float64 formula| = {worst:G3}; a float32 evaluation is off by {worst32:G3}");
            Assert.True(worst <= 1e-7, $"rotary table differs from the float64 formula by {worst:G3}");
            Assert.True(worst32 > 1e-6, "the test positions must be large enough to tell float64 from float32 frequencies");
        }
    }

    [Fact]
    public void RotationTurnsEachAdjacentPairByItsAngle()
    {
        torch.manual_seed(3);
        using var x = randn(1, 2, 3, 4, dtype: ScalarType.Float64);
        using var angles = rand(3, 2, dtype: ScalarType.Float64) * 10;
        using var cos = angles.cos().repeat_interleave(2, dim: 1).to(ScalarType.Float32);
        using var sin = angles.sin().repeat_interleave(2, dim: 1).to(ScalarType.Float32);
        using var y = FluxPosEmbed.Apply(x, (cos, sin));
        Assert.Equal(ScalarType.Float64, y.dtype);
        var xv = x.data<double>().ToArray();
        var yv = y.data<double>().ToArray();
        var a = angles.data<double>().ToArray();
        for (int h = 0; h < 2; h++)
            for (int s = 0; s < 3; s++)
                for (int p = 0; p < 2; p++)
                {
                    int i = (h * 3 + s) * 4 + 2 * p;
                    double c = (float)Math.Cos(a[s * 2 + p]), sn = (float)Math.Sin(a[s * 2 + p]);
                    Assert.Equal(xv[i] * c - xv[i + 1] * sn, yv[i], 1e-6);
                    Assert.Equal(xv[i + 1] * c + xv[i] * sn, yv[i + 1], 1e-6);
                }
    }

    [Fact]
    public void ForwardGivesOneVelocityPerImageTokenAndIsDeterministic()
    {
        using var model = TinyFlux.Model(guidance: true);
        var x = RandomInputs(guidance: true);
        using var _ = inference_mode();
        using var a = Run(model, x);
        using var b = Run(model, x);
        Assert.Equal(new long[] { 2, 12, 64 }, a.shape);
        Assert.True(a.isfinite().all().item<bool>());
        Assert.True(a.equal(b).all().item<bool>());
        // guidance, timestep and pooled text all reach the output
        using var g = model.forward(x.Hidden, x.Text, x.Pooled, x.Timestep, x.ImgIds, x.TxtIds, tensor(new[] { 1.0f, 1.0f }));
        using var t = model.forward(x.Hidden, x.Text, x.Pooled, tensor(new[] { 0.5f, 0.5f }), x.ImgIds, x.TxtIds, x.Guidance);
        using var p = model.forward(x.Hidden, x.Text, x.Pooled * 2, x.Timestep, x.ImgIds, x.TxtIds, x.Guidance);
        Assert.All(new[] { g, t, p }, o => Assert.True(TensorAssert.MaxAbsDiff(o, a) > 1e-4));
        // a [1] timestep and guidance broadcast over the batch
        using var one = model.forward(x.Hidden, x.Text, x.Pooled, tensor(new[] { 0.8f }), x.ImgIds, x.TxtIds, tensor(new[] { 3.5f }));
        using var both = model.forward(x.Hidden, x.Text, x.Pooled, tensor(new[] { 0.8f, 0.8f }), x.ImgIds, x.TxtIds, x.Guidance);
        Assert.True(one.equal(both).all().item<bool>());
    }

    [Fact]
    public void TextTokensComeFirstInTheJointSequence()
    {
        // Text ids are all 0: every text token has the same rotary position, so the order of the text tokens cannot
        // matter. That holds only if the rotary table (text ids, then image ids) lines up with the joint q/k (text,
        // then image): attached the other way round, text tokens would get image positions and their order would count.
        using var model = TinyFlux.Model(guidance: false);
        var x = RandomInputs(guidance: false);
        using var _ = inference_mode();
        using var reference = Run(model, x);
        using var order = tensor(new long[] { 4, 2, 0, 3, 1 });
        using var permutedText = x.Text.index_select(1, order);
        using var same = model.forward(x.Hidden, permutedText, x.Pooled, x.Timestep, x.ImgIds, x.TxtIds);
        double invariance = TensorAssert.MaxAbsDiff(same, reference);
        // With distinct text positions the same permutation changes the output: the test can see misplaced positions.
        using var distinctIds = torch.arange(5, dtype: ScalarType.Float32).unsqueeze(1).expand(5, 3).contiguous() * 7;
        using var withIds = model.forward(x.Hidden, x.Text, x.Pooled, x.Timestep, x.ImgIds, distinctIds);
        using var withIdsPermuted = model.forward(x.Hidden, permutedText, x.Pooled, x.Timestep, x.ImgIds, distinctIds);
        double sensitivity = TensorAssert.MaxAbsDiff(withIdsPermuted, withIds);
        output.WriteLine($"permuted text, equal ids: {invariance:G3}; permuted text, distinct ids: {sensitivity:G3}");
        Assert.True(invariance < 1e-5, $"permuting position-free text tokens changed the output by {invariance:G3}");
        Assert.True(sensitivity > 1e-3, $"permuting positioned text tokens changed the output by only {sensitivity:G3}");
    }

    [Fact]
    public void ImageTokensCarryTheirIds()
    {
        // Permuting image tokens together with their ids permutes the output; permuting the ids alone changes it.
        using var model = TinyFlux.Model(guidance: false);
        var x = RandomInputs(guidance: false);
        using var _ = inference_mode();
        using var reference = Run(model, x);
        using var order = tensor(new long[] { 11, 3, 7, 0, 1, 2, 10, 9, 8, 4, 5, 6 });
        using var hidden = x.Hidden.index_select(1, order);
        using var ids = x.ImgIds.index_select(0, order);
        using var moved = model.forward(hidden, x.Text, x.Pooled, x.Timestep, ids, x.TxtIds);
        using var expected = reference.index_select(1, order);
        double equivariance = TensorAssert.MaxAbsDiff(moved, expected);
        using var idsOnly = model.forward(x.Hidden, x.Text, x.Pooled, x.Timestep, ids, x.TxtIds);
        double idsMatter = TensorAssert.MaxAbsDiff(idsOnly, reference);
        output.WriteLine($"tokens with their ids: {equivariance:G3}; ids alone: {idsMatter:G3}");
        Assert.True(equivariance < 1e-5, $"permuting tokens with their ids is off by {equivariance:G3}");
        Assert.True(idsMatter > 1e-3, $"permuting only the ids changed the output by {idsMatter:G3}");
    }

    [Fact]
    public void GuidanceIsRequiredExactlyWhenConfigured()
    {
        using var dev = TinyFlux.Model(guidance: true);
        using var schnell = TinyFlux.Model(guidance: false);
        var x = RandomInputs(guidance: true);
        var missing = Assert.Throws<ArgumentException>(() => dev.forward(x.Hidden, x.Text, x.Pooled, x.Timestep, x.ImgIds, x.TxtIds));
        Assert.Contains("guidance_embeds", missing.Message);
        var extra = Assert.Throws<ArgumentException>(() => schnell.forward(x.Hidden, x.Text, x.Pooled, x.Timestep, x.ImgIds, x.TxtIds, x.Guidance));
        Assert.Contains("no guidance", extra.Message);
    }

    [Fact]
    public void BadInputsThrowArgumentExceptionsNamingTheProblem()
    {
        using var model = TinyFlux.Model(guidance: true);
        var x = RandomInputs(guidance: true);
        void Throws(string fragment, Func<Tensor> call)
        {
            var e = Assert.ThrowsAny<ArgumentException>(() => call().Dispose());
            Assert.Contains(fragment, e.Message);
            output.WriteLine(e.Message);
        }
        Throws("in_channels", () => model.forward(zeros(2, 16, 6, 8), x.Text, x.Pooled, x.Timestep, x.ImgIds, x.TxtIds, x.Guidance));
        Throws("in_channels", () => model.forward(zeros(2, 12, 16), x.Text, x.Pooled, x.Timestep, x.ImgIds, x.TxtIds, x.Guidance));
        Throws("joint_attention_dim", () => model.forward(x.Hidden, zeros(2, 5, 64), x.Pooled, x.Timestep, x.ImgIds, x.TxtIds, x.Guidance));
        Throws("joint_attention_dim", () => model.forward(x.Hidden, zeros(1, 5, 96), x.Pooled, x.Timestep, x.ImgIds, x.TxtIds, x.Guidance));
        Throws("pooled_projection_dim", () => model.forward(x.Hidden, x.Text, zeros(2, 768), x.Timestep, x.ImgIds, x.TxtIds, x.Guidance));
        Throws("timestep", () => model.forward(x.Hidden, x.Text, x.Pooled, zeros(3), x.ImgIds, x.TxtIds, x.Guidance));
        Throws("img_ids", () => model.forward(x.Hidden, x.Text, x.Pooled, x.Timestep, TinyFlux.ImageIds(4, 4), x.TxtIds, x.Guidance));
        Throws("img_ids", () => model.forward(x.Hidden, x.Text, x.Pooled, x.Timestep, x.ImgIds.unsqueeze(0), x.TxtIds, x.Guidance));
        Throws("txt_ids", () => model.forward(x.Hidden, x.Text, x.Pooled, x.Timestep, x.ImgIds, zeros(6, 3), x.Guidance));
        Throws("txt_ids", () => model.forward(x.Hidden, x.Text, x.Pooled, x.Timestep, x.ImgIds, zeros(5, 2), x.Guidance));
        Throws("guidance", () => model.forward(x.Hidden, x.Text, x.Pooled, x.Timestep, x.ImgIds, x.TxtIds, zeros(3)));
        Assert.Throws<ArgumentException>(() => new FluxTransformer2DModel(TinyFlux.Config(false) with { AxesDimsRope = [4, 6, 8] }, new Device(DeviceType.META)));
    }

    // Not a parity bound (no diffusers fixture): a sanity bound on a random model. In bfloat16 part of the difference is
    // a different input, as in diffusers: the timestep is cast to the model dtype before the ×1000 (0.3 -> 0.30078125).
    [Theory]
    [InlineData(ScalarType.BFloat16, 5e-2)]
    [InlineData(ScalarType.Float16, 5e-3)]
    public void HalfPrecisionStaysCloseToFloat32(ScalarType dtype, double maxRelativeL2)
    {
        using var model = TinyFlux.Model(guidance: true);
        var x = RandomInputs(guidance: true);
        using var _ = inference_mode();
        using var reference = Run(model, x);
        model.to(dtype);
        using var half = model.forward(x.Hidden.to(dtype), x.Text.to(dtype), x.Pooled.to(dtype), x.Timestep, x.ImgIds, x.TxtIds, x.Guidance);
        Assert.Equal(dtype, half.dtype);
        using var diff = (half.to(ScalarType.Float64) - reference.to(ScalarType.Float64)).norm();
        using var norm = reference.to(ScalarType.Float64).norm();
        double rel = diff.item<double>() / norm.item<double>();
        output.WriteLine($"{dtype}: relative L2 vs float32 = {rel:G3}");
        Assert.True(rel < maxRelativeL2, $"{dtype}: relative L2 {rel:G3}");
    }

    [Fact]
    public void FromPretrainedLoadsStrictlyAndTheRegistryKnowsTheClass()
    {
        string dir = Directory.CreateTempSubdirectory("fluxt").FullName;
        try
        {
            using var model = TinyFlux.Model(guidance: true, seed: 4);
            SafetensorsWriter.Save(Path.Combine(dir, "diffusion_pytorch_model.safetensors"), model.state_dict());
            File.WriteAllText(Path.Combine(dir, "config.json"), """
                {"_class_name": "FluxTransformer2DModel", "num_layers": 2, "num_single_layers": 2, "attention_head_dim": 16,
                 "num_attention_heads": 2, "joint_attention_dim": 96, "pooled_projection_dim": 32, "guidance_embeds": true,
                 "axes_dims_rope": [4, 6, 6], "in_channels": 64, "patch_size": 1, "out_channels": null}
                """);
            var x = RandomInputs(guidance: true);
            using (var loaded = FluxTransformer2DModel.FromPretrained(dir))
            using (var _ = inference_mode())
            using (var a = Run(model, x))
            using (var b = Run(loaded, x))
            {
                var loadedWeights = loaded.state_dict();
                Assert.All(model.state_dict(), kv => Assert.True(kv.Value.equal(loadedWeights[kv.Key]).all().item<bool>(), kv.Key));
                // Equal weights; the mmapped copies may take other BLAS paths (measured: 1 float32 ulp).
                TensorAssert.Close(b, a, 1e-6, "loaded model output");
            }
            using (var meta = ModelRegistry.Build("transformer", "FluxTransformer2DModel", dir, new Device(DeviceType.META)))
                Assert.Equal(model.state_dict().Count, meta.state_dict().Count);

            File.WriteAllText(Path.Combine(dir, "config.json"), File.ReadAllText(Path.Combine(dir, "config.json")).Replace("\"guidance_embeds\": true", "\"guidance_embeds\": false"));
            var e = Assert.Throws<WeightLoadException>(() => FluxTransformer2DModel.FromPretrained(dir));
            Assert.Contains("time_text_embed.guidance_embedder.linear_1.weight", e.Unexpected);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void ForwardLeavesNoTensorsBehind()
    {
        using var model = TinyFlux.Model(guidance: true);
        var x = RandomInputs(guidance: true);
        using var _ = inference_mode();
        using (var warm = Run(model, x)) { }
        long before = LiveTensors.Count();
        using (var y = Run(model, x)) { }
        Assert.Equal(before, LiveTensors.Count());
    }
}
