using System.Text.Json;
using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

public class SD3TransformerTests(ITestOutputHelper output)
{
    private static string Folder => Fixtures.Path("tiny-sd3/model/transformer");

    private sealed record Inputs(Tensor Hidden, Tensor Text, Tensor Pooled, Tensor Timestep, Tensor Expected);

    private static Inputs LoadInputs()
    {
        var e = Fixtures.Expected();
        return new Inputs(e["transformer.hidden_states"], e["transformer.encoder_hidden_states"], e["transformer.pooled_projections"],
            e["transformer.timestep"], e["transformer.out"]);
    }


    [Fact]
    public void TinyModelMatchesDiffusersInFloat32()
    {
        using var model = SD3Transformer2DModel.FromPretrained(Folder);
        Assert.Equal(2, model.Config.NumLayers);
        Assert.Equal([0], model.Config.DualAttentionLayers);
        Assert.Equal("rms_norm", model.Config.QkNorm);
        var x = LoadInputs();
        Assert.Equal(new long[] { 2, 16, 16, 24 }, x.Hidden.shape); // non-square: an 8x12 crop of the 32x32 table
        using var _ = torch.inference_mode();
        using var y = model.forward(x.Hidden, x.Text, x.Pooled, x.Timestep);
        Assert.Equal(ScalarType.Float32, y.dtype);
        double err = TensorAssert.Close(y, x.Expected, 1e-4, "transformer.out");
        output.WriteLine($"float32 max |ours - diffusers| = {err:G4} (max |expected| = {x.Expected.abs().max().item<float>():G4})");
    }

    [Fact]
    public void ComputedPositionTableEqualsTheStoredOne()
    {
        using var weights = WeightFiles.TryOpen(Folder)!;
        using var stored = weights.Read("pos_embed.pos_embed");
        var config = ConfigJson.Read<SD3Transformer2DModelConfig>(Path.Combine(Folder, "config.json"));
        int p = config.PosEmbedMaxSize!.Value;
        using var computed = PatchEmbed.SinCos2D(config.InnerDim, p, p, config.SampleSize / config.PatchSize);
        TensorAssert.Close(computed.to(ScalarType.Float32).unsqueeze(0), stored, 1e-6, "pos_embed");
    }

    [Fact]
    public void PatchEmbedLeavesTheStreamTokenMajor()
    {
        // The conv's output seen through flatten(2).transpose(1, 2) is channels-first in memory; the stream the blocks
        // read must be laid out [B, N, D] or every LayerNorm copies it and every residual sum reads two layouts.
        using var inference = inference_mode();
        using var embed = new PatchEmbed(16, 16, 2, 4, 32, 16);
        using var latent = randn(2, 4, 8, 8);
        using var tokens = embed.forward(latent);
        Assert.Equal([2L, 16, 32], tokens.shape);
        Assert.True(tokens.is_contiguous());
    }

    public static TheoryData<string, string> FullSizeConfigs => new()
    {
        // sd3-reference.md 1.2 (hub configs)
        { "transformer.sd3-medium", """{"num_layers":24,"num_attention_heads":24,"caption_projection_dim":1536,"pos_embed_max_size":192}""" },
        { "transformer.sd3.5-medium", """{"num_layers":24,"num_attention_heads":24,"caption_projection_dim":1536,"pos_embed_max_size":384,"dual_attention_layers":[0,1,2,3,4,5,6,7,8,9,10,11,12],"qk_norm":"rms_norm"}""" },
        { "transformer.sd3.5-large", """{"num_layers":38,"num_attention_heads":38,"caption_projection_dim":2432,"pos_embed_max_size":192,"qk_norm":"rms_norm"}""" },
    };

    [Theory]
    [MemberData(nameof(FullSizeConfigs))]
    public void FullSizeModelsHaveDiffusersParameterCounts(string name, string configJson)
    {
        var config = ConfigJson.Parse<SD3Transformer2DModelConfig>(
            configJson.Replace("{", """{"sample_size":128,"patch_size":2,"in_channels":16,"attention_head_dim":64,"joint_attention_dim":4096,"pooled_projection_dim":2048,"out_channels":16,"""));
        using var doc = JsonDocument.Parse(File.ReadAllText(Fixtures.Path("image-ops/meta.json")));
        var counts = doc.RootElement.GetProperty("parameter_counts");
        using var model = new SD3Transformer2DModel(config, new Device(DeviceType.META));
        long elements = model.parameters().Sum(t => t.numel()) + model.buffers().Sum(t => t.numel());
        Assert.Equal(counts.GetProperty(name).GetInt64(), elements);
        Assert.Equal(counts.GetProperty(name + ".keys").GetInt32(), model.state_dict().Count);
        Assert.All(model.parameters(), t => Assert.Equal(DeviceType.META, t.device_type));
    }

    [Fact]
    public void ConfigDefaultsAreTheDiffusersConstructorDefaults()
    {
        var c = ConfigJson.Parse<SD3Transformer2DModelConfig>("{}");
        Assert.Equal((128, 2, 16, 18, 64, 18), (c.SampleSize, c.PatchSize, c.InChannels, c.NumLayers, c.AttentionHeadDim, c.NumAttentionHeads));
        Assert.Equal((4096, 1152, 2048, 16, 96), (c.JointAttentionDim, c.CaptionProjectionDim, c.PooledProjectionDim, c.OutChannels, c.PosEmbedMaxSize));
        Assert.Empty(c.DualAttentionLayers);
        Assert.Null(c.QkNorm);
    }

    [Fact]
    public void BadInputsThrowArgumentExceptionsNamingTheProblem()
    {
        using var model = SD3Transformer2DModel.FromPretrained(Folder);
        var x = LoadInputs();
        void Throws(string fragment, Func<Tensor> call)
        {
            var e = Assert.ThrowsAny<ArgumentException>(() => call().Dispose());
            Assert.Contains(fragment, e.Message);
            output.WriteLine(e.Message);
        }
        // pos_embed_max_size 32 with patch 2: a 66-high latent needs a 33-row grid.
        Throws("pos_embed_max_size", () => model.forward(torch.zeros(2, 16, 66, 24), x.Text, x.Pooled, x.Timestep));
        Throws("pos_embed_max_size", () => model.forward(torch.zeros(2, 16, 16, 70), x.Text, x.Pooled, x.Timestep));
        Throws("in_channels", () => model.forward(torch.zeros(2, 4, 16, 24), x.Text, x.Pooled, x.Timestep));
        Throws("patch size", () => model.forward(torch.zeros(2, 16, 15, 24), x.Text, x.Pooled, x.Timestep));
        Throws("joint_attention_dim", () => model.forward(x.Hidden, torch.zeros(2, 11, 64), x.Pooled, x.Timestep));
        Throws("pooled_projection_dim", () => model.forward(x.Hidden, x.Text, torch.zeros(2, 32), x.Timestep));
        Throws("timestep", () => model.forward(x.Hidden, x.Text, x.Pooled, torch.zeros(3)));
        Throws("skip layer", () => model.forward(x.Hidden, x.Text, x.Pooled, x.Timestep, [2]));
        // The largest latent the table allows runs.
        using var _ = torch.inference_mode();
        using var big = model.forward(torch.zeros(1, 16, 64, 64), torch.zeros(1, 3, 96), torch.zeros(1, 64), torch.tensor(new[] { 500f }));
        Assert.Equal(new long[] { 1, 16, 64, 64 }, big.shape);
    }

    [Theory]
    [InlineData(ScalarType.BFloat16, 2e-2)]
    [InlineData(ScalarType.Float16, 5e-3)]
    public void HalfPrecisionStaysCloseToTheFloat32Fixture(ScalarType dtype, double maxRelativeL2)
    {
        using var model = SD3Transformer2DModel.FromPretrained(Folder, dtype);
        Assert.All(model.parameters(), t => Assert.Equal(dtype, t.dtype));
        var x = LoadInputs();
        using var _ = torch.inference_mode();
        using var y = model.forward(x.Hidden.to(dtype), x.Text.to(dtype), x.Pooled.to(dtype), x.Timestep);
        Assert.Equal(dtype, y.dtype);
        double rel = TensorAssert.RelativeL2(y, x.Expected);
        output.WriteLine($"{dtype}: relative L2 vs float32 diffusers = {rel:G4}, max |diff| = {TensorAssert.MaxAbsDiff(y, x.Expected):G4}");
        Assert.True(rel < maxRelativeL2, $"{dtype}: relative L2 {rel:G4} >= {maxRelativeL2}");
    }

    [Fact]
    public void SkipLayersBypassesBlocks()
    {
        using var model = SD3Transformer2DModel.FromPretrained(Folder);
        var x = LoadInputs();
        using var _ = torch.inference_mode();
        using var normal = model.forward(x.Hidden, x.Text, x.Pooled, x.Timestep);
        using var none = model.forward(x.Hidden, x.Text, x.Pooled, x.Timestep, []);
        Assert.True(none.equal(normal).all().item<bool>(), "skipping no layer must equal the normal forward");
        foreach (int layer in new[] { 0, 1 })
        {
            using var skipped = model.forward(x.Hidden, x.Text, x.Pooled, x.Timestep, [layer]);
            double diff = TensorAssert.MaxAbsDiff(skipped, normal);
            output.WriteLine($"skip [{layer}]: max |diff| vs normal = {diff:G4}");
            Assert.True(diff > 1e-2, $"skipping layer {layer} changed the output by only {diff:G4}");
        }
    }

    [Fact]
    public void TimestepFeaturesAreCosThenSinInFloat32()
    {
        using var t = torch.tensor(new[] { 1.0, 250.0 }, dtype: ScalarType.Float64);
        using var emb = new Timesteps(256, flipSinToCos: true, downscaleFreqShift: 0).forward(t);
        Assert.Equal(ScalarType.Float32, emb.dtype);
        Assert.Equal(new long[] { 2, 256 }, emb.shape);
        var v = emb.data<float>().ToArray();
        Assert.Equal(Math.Cos(1.0), v[0], 1e-6);      // frequency 1 for k = 0: cos half first
        Assert.Equal(Math.Sin(1.0), v[128], 1e-6);
        double f5 = Math.Exp(-Math.Log(10000) * 5 / 128);
        Assert.Equal(Math.Cos(250 * f5), v[256 + 5], 1e-4);
        Assert.Equal(Math.Sin(250 * f5), v[256 + 128 + 5], 1e-4);
    }

    [Fact]
    public void LoadingIsStrictAboutTheConfig()
    {
        string dir = Directory.CreateTempSubdirectory("sd3t").FullName;
        try
        {
            File.Copy(Path.Combine(Folder, "diffusion_pytorch_model.safetensors"), Path.Combine(dir, "diffusion_pytorch_model.safetensors"));
            string json = File.ReadAllText(Path.Combine(Folder, "config.json"));
            File.WriteAllText(Path.Combine(dir, "config.json"), System.Text.RegularExpressions.Regex.Replace(json, @"""dual_attention_layers"":\s*\[[^\]]*\]", @"""dual_attention_layers"": []"));
            var e = Assert.Throws<WeightLoadException>(() => SD3Transformer2DModel.FromPretrained(dir));
            Assert.Contains("transformer_blocks.0.attn2.to_q.weight", e.Unexpected);
            Assert.Contains(e.ShapeMismatches, m => m.StartsWith("transformer_blocks.0.norm1.linear.weight"));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void ForwardLeavesNoTensorsBehind()
    {
        using var model = SD3Transformer2DModel.FromPretrained(Folder);
        var x = LoadInputs();
        using var _ = torch.inference_mode();
        using (var warm = model.forward(x.Hidden, x.Text, x.Pooled, x.Timestep)) { }
        long before = LiveTensors.Count();
        using (var y = model.forward(x.Hidden, x.Text, x.Pooled, x.Timestep)) { }
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    /// <summary>The fixture's text with its tail replaced by <paramref name="zeros"/> zero rows (the pipeline without T5).</summary>
    private static Tensor TextWithZeroTail(Tensor text, long keep, long zeros) =>
        cat([text.narrow(1, 0, keep), torch.zeros(text.shape[0], zeros, text.shape[2])], 1);

    [Fact]
    public void CollapsedZeroTailGivesTheFullSequenceResult()
    {
        using var model = SD3Transformer2DModel.FromPretrained(Folder);
        var x = LoadInputs();
        using var _ = torch.inference_mode();
        using var text = TextWithZeroTail(x.Text, 5, 256);
        var (collapsed, repeats) = SD3Transformer2DModel.CollapseRepeatedTail(text);
        using (collapsed)
        {
            Assert.Equal(256, repeats);
            Assert.Equal([2, 6, 96], collapsed.shape);
            using var full = model.forward(x.Hidden, text, x.Pooled, x.Timestep);
            using var fast = model.forward(x.Hidden, collapsed, x.Pooled, x.Timestep, lastTokenRepeats: repeats);
            using var plain = model.forward(x.Hidden, collapsed, x.Pooled, x.Timestep);
            double diff = TensorAssert.MaxAbsDiff(fast, full), scale = full.abs().max().item<float>();
            double withoutWeight = TensorAssert.MaxAbsDiff(plain, full);
            output.WriteLine($"collapsed vs full: max |diff| {diff:G4} (max |out| {scale:G4}); one zero row without its count: {withoutWeight:G4}");
            Assert.True(diff <= 1e-5 * scale, $"the collapsed sequence differs from the full one by {diff:G4}");
            // The count matters: the same short sequence without it is another model input.
            Assert.True(withoutWeight > 1e-2 * scale, $"dropping the count changed the output by only {withoutWeight:G4}");
        }
    }

    [Theory]
    [InlineData(ScalarType.BFloat16, 256)]
    [InlineData(ScalarType.Float16, 256)]
    [InlineData(ScalarType.BFloat16, 3)]
    [InlineData(ScalarType.BFloat16, 1000)]
    [InlineData(ScalarType.Float32, 256)]
    public void RepeatedTokenLogitsWeighTheCountOnceRoundedToTheModelType(ScalarType dtype, long repeats)
    {
        var logits = SD3Transformer2DModel.RepeatedTokenLogits(repeats, dtype);
        // What the attention adds: each logit rounded to the model's type, as JointAttention casts the key bias.
        using var rounded = torch.tensor(logits, ScalarType.Float32).to(dtype).to(ScalarType.Float64);
        double weight = rounded.exp().sum().item<double>();
        Assert.True(Math.Abs(weight - repeats) <= 1e-4 * repeats, $"{dtype}: the keys weigh {weight} instead of {repeats}");
        Assert.Equal(dtype == ScalarType.Float32 ? 1 : 2, logits.Length);
        // bfloat16 alone would round ln(256) to 5.531 (1.4% of the weight): the split is what makes it exact.
        using var single = torch.tensor(Math.Log(repeats), ScalarType.Float32).to(dtype).to(ScalarType.Float64);
        if (dtype == ScalarType.BFloat16 && repeats == 256) Assert.True(Math.Abs(Math.Exp(single.item<double>()) - repeats) > 1e-2 * repeats);
    }

    [Fact]
    public void CollapsedTailAddsNoErrorBeyondBfloat16s()
    {
        var x = LoadInputs();
        using var _ = torch.inference_mode();
        using var text = TextWithZeroTail(x.Text, 5, 256);
        var (collapsed, repeats) = SD3Transformer2DModel.CollapseRepeatedTail(text);
        using var exact32 = SD3Transformer2DModel.FromPretrained(Folder);
        using var model = SD3Transformer2DModel.FromPretrained(Folder, ScalarType.BFloat16);
        using (collapsed)
        {
            using var reference = exact32.forward(x.Hidden, text, x.Pooled, x.Timestep);
            using var full = model.forward(x.Hidden, text, x.Pooled, x.Timestep);
            using var fast = model.forward(x.Hidden, collapsed, x.Pooled, x.Timestep, lastTokenRepeats: repeats);
            double errFull = TensorAssert.RelativeL2(full, reference), errFast = TensorAssert.RelativeL2(fast, reference);
            output.WriteLine($"bf16 vs float32, relative L2: full sequence {errFull:G4}, collapsed {errFast:G4}");
            // The count rides on two bf16-exact logits (RepeatedTokenLogits); measured 0.0164 vs 0.0176 for the full sequence.
            // With one logit bf16 rounded ln(256) to 5.53 (1.4% of that weight): 0.0197 vs 0.0176.
            Assert.True(errFast <= 1.1 * errFull, $"collapsed bf16 error {errFast:G4} vs the full sequence's {errFull:G4}");
        }
    }

    [Fact]
    public void CollapseFindsOnlyTailsRepeatedInEveryBatchItem()
    {
        using var a = torch.randn(2, 7, 4);
        var (same, one) = SD3Transformer2DModel.CollapseRepeatedTail(a);
        using (same)
        {
            Assert.Equal(1, one);
            Assert.True(same.equal(a).all().item<bool>());
        }
        // A non-zero repeated tail collapses too (keeping one of its rows).
        using var b = a.clone();
        b.narrow(1, 3, 4).copy_(torch.full(2, 4, 4, 1.5f));
        var (shortB, repeatsB) = SD3Transformer2DModel.CollapseRepeatedTail(b);
        using (shortB)
        {
            Assert.Equal(4, repeatsB);
            Assert.True(shortB.equal(b.narrow(1, 0, 4)).all().item<bool>());
        }
        // Repeated in one batch item only: the rows differ across the batch, so nothing collapses beyond the common tail.
        using var c = b.clone();
        c[0, 4] = torch.full(4, 2f);
        var (shortC, repeatsC) = SD3Transformer2DModel.CollapseRepeatedTail(c);
        using (shortC)
        {
            Assert.Equal(2, repeatsC);
            Assert.Equal(6, shortC.shape[1]);
        }
        Assert.Throws<ArgumentOutOfRangeException>(() =>
        {
            using var m = SD3Transformer2DModel.FromPretrained(Folder);
            var x = LoadInputs();
            m.forward(x.Hidden, x.Text, x.Pooled, x.Timestep, lastTokenRepeats: 0).Dispose();
        });
    }
}
