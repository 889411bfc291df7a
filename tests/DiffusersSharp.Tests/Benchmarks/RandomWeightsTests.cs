using System.Text.Json;
using DiffusersSharp.Benchmarks;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Benchmarks;

/// <summary>Random-weight models: the SD3.5-Medium preset is the real architecture; filling draws on the device, in the dtype.</summary>
public sealed class RandomWeightsTests
{
    private static readonly Device Meta = new(DeviceType.META);

    [Fact]
    public void Sd35MediumPresetHasTheReferenceParameterCounts()
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Fixtures.Path("image-ops/meta.json")));
        var counts = doc.RootElement.GetProperty("parameter_counts");
        var c = PipelineConfigs.Resolve("SD3.5-Medium");
        Assert.Same(PipelineConfigs.StableDiffusion35Medium, c);
        static long Elements(nn.Module m) => m.parameters().DistinctBy(p => p.Handle).Sum(p => p.numel()) + m.buffers().Sum(b => b.numel());
        using (var m = new SD3Transformer2DModel(c.Transformer, Meta))
        {
            Assert.Equal(counts.GetProperty("transformer.sd3.5-medium").GetInt64(), Elements(m));
            // What the bench reports (parameters only, like the reference script's print): without the 384x384 sin-cos table.
            Assert.Equal(counts.GetProperty("transformer.sd3.5-medium").GetInt64() - 384L * 384 * 1536, RandomWeights.CountParameters(m));
        }
        using (var m = new AutoencoderKL(c.Vae, Meta))
        {
            Assert.Equal(counts.GetProperty("vae.sd3").GetInt64(), Elements(m));
            Assert.Equal(83819683L, RandomWeights.CountParameters(m));
        }
        using (var m = new CLIPTextModelWithProjection(c.TextEncoder, Meta)) Assert.Equal(counts.GetProperty("clip_l").GetInt64(), Elements(m));
        using (var m = new CLIPTextModelWithProjection(c.TextEncoder2, Meta)) Assert.Equal(counts.GetProperty("clip_g").GetInt64(), Elements(m));
        using (var m = new T5EncoderModel(c.TextEncoder3!, Meta)) Assert.Equal(counts.GetProperty("t5xxl").GetInt64(), Elements(m));
        Assert.Equal((1000, 3.0), (c.Scheduler.NumTrainTimesteps, c.Scheduler.Shift));
    }

    [Fact]
    public void FillDrawsEveryTensorInTheModelDtypeWithStd002AndKeepsTiedWeightsTied()
    {
        var configs = PipelineConfigs.Resolve(Fixtures.TinySd3Model);
        using var t5 = RandomWeights.Build((d, t) => new T5EncoderModel(configs.TextEncoder3!, d, t), CPU, ScalarType.BFloat16);
        var state = t5.state_dict();
        Assert.All(state.Values, v => Assert.Equal((DeviceType.CPU, ScalarType.BFloat16), (v.device_type, v.dtype)));
        Assert.Equal(state["shared.weight"].Handle, state["encoder.embed_tokens.weight"].Handle);
        using var all = cat(state.Values.Select(v => v.to(ScalarType.Float32).flatten()).ToArray());
        Assert.InRange(all.std().item<float>(), 0.019, 0.021);
        Assert.InRange(all.mean().item<float>(), -0.001, 0.001);
        Assert.False(t5.training);
    }

    [Fact]
    public void ResolveRejectsUnknownPresetsAndMedianIsTheMiddle()
    {
        var e = Assert.Throws<ArgumentException>(() => PipelineConfigs.Resolve("sd3.5-huge"));
        Assert.Contains("sd3.5-medium", e.Message);
        Assert.Equal(2.0, PipelineBenchmark.Median([3.0, 1.0, 2.0]));
        Assert.Equal(2.5, PipelineBenchmark.Median([4.0, 1.0, 2.0, 3.0]));
    }
    [Fact]
    public void NoT5PromptEmbeddingsEndInZeroRowsThatCollapseIntoOneKey()
    {
        using var embeds = randn([1, 77 + 8, 16]);
        using var noT5 = PipelineBenchmark.WithoutT5Rows(embeds, 8);
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(noT5.narrow(1, 0, 77), embeds.narrow(1, 0, 77)));
        Assert.Equal(0.0, noT5.narrow(1, 77, 8).abs().max().item<float>());
        Assert.NotEqual(0.0, embeds.narrow(1, 77, 8).abs().max().item<float>()); // the input is left as it was
        var (collapsed, repeats) = SD3Transformer2DModel.CollapseRepeatedTail(noT5);
        using (collapsed) Assert.Equal((78L, 8L), (collapsed.shape[1], repeats));
        Assert.Throws<ArgumentOutOfRangeException>(() => PipelineBenchmark.WithoutT5Rows(embeds, 86));
    }
}
