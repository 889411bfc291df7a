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
        using (var m = new CLIPTextModelWithProjection(c.TextEncoder!, Meta)) Assert.Equal(counts.GetProperty("clip_l").GetInt64(), Elements(m));
        using (var m = new CLIPTextModelWithProjection(c.TextEncoder2!, Meta)) Assert.Equal(counts.GetProperty("clip_g").GetInt64(), Elements(m));
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

    public static TheoryData<string, string, long> FullSizePresetCounts => new()
    {
        // UNets as in UNet2DConditionModelTests (the hub models' counts); the 4-channel VAE of SD 1.x / SDXL (83,653,863:
        // SD3's 83,819,683 less 12 latent channels in encoder.conv_out and decoder.conv_in, plus quant_conv and
        // post_quant_conv); CLIP-L without projection (clip_l of image-ops/meta.json less 768 x 768); CLIP-G and T5-XXL as
        // in meta.json; the Flux transformers as in FluxTransformerTests; Flux's VAE is SD3's.
        { UNetPipelineConfigs.SdxlBase, "unet", 2_567_463_684 },
        { UNetPipelineConfigs.SdxlBase, "vae", 83_653_863 },
        { UNetPipelineConfigs.SdxlBase, "text_encoder", 123_060_480 },
        { UNetPipelineConfigs.SdxlBase, "text_encoder_2", 694_659_840 },
        { UNetPipelineConfigs.Sd15, "unet", 859_520_964 },
        { UNetPipelineConfigs.Sd15, "vae", 83_653_863 },
        { UNetPipelineConfigs.Sd15, "text_encoder", 123_060_480 },
        { FluxPipelineConfigs.Schnell, "transformer", 11_891_178_560 },
        { FluxPipelineConfigs.Dev, "transformer", 11_901_408_320 },
        { FluxPipelineConfigs.Dev, "vae", 83_819_683 },
        { FluxPipelineConfigs.Dev, "text_encoder", 123_060_480 },
        { FluxPipelineConfigs.Dev, "text_encoder_2", 4_762_310_656 },
    };

    [Theory]
    [MemberData(nameof(FullSizePresetCounts))]
    public void FullSizePresetsBuildOnMetaWithTheModelsParameterCounts(string preset, string component, long expected)
    {
        nn.Module Build(ModelConfigs configs) => (configs, component) switch
        {
            (UNetPipelineConfigs u, "unet") => new DiffusersSharp.Models.Unets.UNet2DConditionModel(u.Unet, Meta),
            (UNetPipelineConfigs u, "vae") => new AutoencoderKL(u.Vae, Meta),
            (UNetPipelineConfigs u, "text_encoder") => new CLIPTextModel(u.TextEncoder!, Meta),
            (UNetPipelineConfigs u, "text_encoder_2") => new CLIPTextModelWithProjection(u.TextEncoder2!, Meta),
            (FluxPipelineConfigs f, "transformer") => new FluxTransformer2DModel(f.Transformer, Meta),
            (FluxPipelineConfigs f, "vae") => new AutoencoderKL(f.Vae, Meta),
            (FluxPipelineConfigs f, "text_encoder") => new CLIPTextModel(f.TextEncoder, Meta),
            (FluxPipelineConfigs f, "text_encoder_2") => new T5EncoderModel(f.TextEncoder2, Meta),
            _ => throw new ArgumentException($"{preset} {component}"),
        };
        using var model = Build(ModelConfigs.Resolve(preset.ToUpperInvariant()));
        Assert.All(model.parameters(), p => Assert.Equal(DeviceType.META, p.device_type));
        long elements = model.parameters().DistinctBy(p => p.Handle).Sum(p => p.numel()) + model.buffers().Sum(b => b.numel());
        Assert.Equal(expected, elements);
    }

    [Fact]
    public void PresetsResolveToTheirFamilyWithDiffusersDefaults()
    {
        var options = new BenchmarkOptions { RandomWeights = "x" };
        BenchmarkOptions For(string preset) => options.WithFamilyDefaults(ModelConfigs.Resolve(preset));
        Assert.Equal((1024, 1024, 40, 4.5, (int?)256), Tuple(For("sd3.5-medium")));
        Assert.Equal((1024, 1024, 50, 5.0, (int?)null), Tuple(For("sdxl-base")));
        Assert.Equal((512, 512, 50, 7.5, (int?)null), Tuple(For("sd1.5")));
        Assert.Equal((1024, 1024, 4, 0.0, (int?)256), Tuple(For("flux.1-schnell")));
        Assert.Equal((1024, 1024, 50, 3.5, (int?)512), Tuple(For("flux.1-dev")));
        Assert.Equal((768, 1024, 28, 4.0, (int?)300), Tuple((options with { Height = 768, Steps = 28, GuidanceScale = 4, MaxSequenceLength = 300 }).WithFamilyDefaults(FluxPipelineConfigs.FluxDev)));
        Assert.Equal(("StableDiffusionXLPipeline", "StableDiffusionPipeline", "FluxPipeline", "StableDiffusion3Pipeline"),
            (ModelConfigs.Resolve("sdxl-base").PipelineClass, ModelConfigs.Resolve("sd1.5").PipelineClass, ModelConfigs.Resolve("flux.1-dev").PipelineClass, ModelConfigs.Resolve("sd3.5-medium").PipelineClass));
        Assert.True(UNetPipelineConfigs.StableDiffusionXLBase.IsXL);
        Assert.Equal(("EulerDiscreteScheduler", "PNDMScheduler"), (UNetPipelineConfigs.StableDiffusionXLBase.Scheduler["_class_name"]!.GetValue<string>(), UNetPipelineConfigs.StableDiffusion15.Scheduler["_class_name"]!.GetValue<string>()));
        Assert.Equal((1.0, false, 3.0, true), (FluxPipelineConfigs.FluxSchnell.Scheduler.Shift, FluxPipelineConfigs.FluxSchnell.Scheduler.UseDynamicShifting, FluxPipelineConfigs.FluxDev.Scheduler.Shift, FluxPipelineConfigs.FluxDev.Scheduler.UseDynamicShifting));
        static (int, int, int, double, int?) Tuple(BenchmarkOptions o) => (o.Height!.Value, o.Width!.Value, o.Steps!.Value, o.GuidanceScale!.Value, o.MaxSequenceLength);
    }
}
