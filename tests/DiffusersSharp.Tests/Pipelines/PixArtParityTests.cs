using System.Text.Json.Nodes;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.PixArt;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// PixArtSigmaPipeline and PixArtAlphaPipeline against diffusers' own runs on the tiny PixArt models (fixture
/// local-diffusers/pixart, made by tools/reference/pixart.py with diffusers 0.36.0 on torch 1.13 CPU, float32): the
/// default DPM-Solver++ schedule, masked prompt embeddings with CFG, without CFG, two images per prompt, non-square
/// sizes, PixArt-α's micro-conditions. Prompt embeddings and masks come from the fixture, so T5 is not part of this
/// check. Latents are compared at every step, then the final latents and the decoded image, each within
/// 1e-5 × max(1, max |expected|) as the Flux parity tests. Measured here: step latents within 1.03e-6 of their magnitude
/// (the random tiny transformers drive the latents to 18 .. 590; worst absolute 5.1e-4 of 548), images within 1.1e-6.
/// </summary>
public sealed class PixArtParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-5;
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/pixart/expected.safetensors");
    private readonly List<PixArtComponents> _components = [];

    private Tensor E(string key) => _expected[key];

    private PixArtComponents Components(string transformer)
    {
        var components = new PixArtComponents
        {
            Transformer = PixArtTransformer2DModel.FromPretrained(Fixtures.Path($"local-diffusers/pixart/{transformer}/transformer")),
            Vae = AutoencoderKL.FromPretrained(Fixtures.Path("tiny-sdxl/model/vae")),
            SchedulerConfig = (JsonObject)JsonNode.Parse(File.ReadAllText(Fixtures.Path("local-diffusers/pixart/scheduler/scheduler_config.json")))!,
            PipelineClass = transformer == "alpha" ? PixArtComponents.AlphaPipelineClass : PixArtComponents.SigmaPipelineClass,
            Device = CPU, Dtype = ScalarType.Float32,
        };
        _components.Add(components);
        return components;
    }

    private double Close(Tensor actual, string key)
    {
        double error = TensorAssert.Close(actual, E(key), Tolerance, key);
        output.WriteLine($"{key}: max |diff| {error:G3} (max |expected| {E(key).abs().max().item<float>():G3})");
        return error;
    }

    /// <summary>The fixture's embeddings; binning off, as the script's cases but the binned one give it.</summary>
    private PixArtRequest Embeds(bool negative) => new()
    {
        UseResolutionBinning = false,
        PromptEmbeds = E("in.prompt_embeds"), PromptAttentionMask = E("in.prompt_attention_mask").to(ScalarType.Int64),
        NegativePromptEmbeds = negative ? E("in.negative_prompt_embeds") : null,
        NegativePromptAttentionMask = negative ? E("in.negative_prompt_attention_mask").to(ScalarType.Int64) : null,
    };

    /// <summary>Runs the case twice, as the script does: latents (checked at every step), then the decoded image.</summary>
    private void Check(PixArtPipelineBase pipe, PixArtRequest request, string name, long seed)
    {
        int steps = 0;
        using (var latents = pipe.Generate(request with
        {
            Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Latent,
            CallbackOnStepEnd = c => { Close(c.Latents, $"{name}.step{c.Step}.latents"); steps++; },
        })) Close(latents.Tensor!, $"{name}.latents");
        Assert.Equal(_expected.Keys.Count(k => k.StartsWith($"{name}.step", StringComparison.Ordinal)), steps);
        using var image = pipe.Generate(request with { Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Numpy });
        Close(image.Tensor!, $"{name}.image");
    }

    [Fact]
    public void SigmaWithGuidanceMatchesDiffusers()
    {
        using var pipe = new PixArtSigmaPipeline(Components("sigma"));
        Check(pipe, Embeds(negative: true) with { Height = 64, Width = 64, NumInferenceSteps = 5, GuidanceScale = 4.5 }, "t2i", 42);
    }

    [Fact]
    public void SigmaWithoutGuidanceNonSquareMatchesDiffusers()
    {
        using var pipe = new PixArtSigmaPipeline(Components("sigma"));
        Check(pipe, Embeds(negative: false) with { Height = 48, Width = 64, NumInferenceSteps = 4, GuidanceScale = 1.0 }, "t2i_nocfg", 7);
    }

    [Fact]
    public void SigmaTwoImagesPerPromptMatchesDiffusers()
    {
        using var pipe = new PixArtSigmaPipeline(Components("sigma"));
        Check(pipe, Embeds(negative: true) with { Height = 64, Width = 48, NumInferenceSteps = 3, GuidanceScale = 3.0, NumImagesPerPrompt = 2 }, "t2i_two", 123456);
    }

    [Fact]
    public void AlphaWithMicroConditionsMatchesDiffusers()
    {
        using var pipe = new PixArtAlphaPipeline(Components("alpha"));
        Check(pipe, Embeds(negative: true) with { Height = 48, Width = 64, NumInferenceSteps = 4, GuidanceScale = 4.5 }, "alpha_t2i", 99);
    }

    /// <summary>
    /// Resolution binning (diffusers' default) at sample_size 32: 200 x 120 runs at the 320 x 192 bin (ratio 1.67 of 1.667)
    /// and the decoded image is resized to cover 200 x 120 (bilinear) and center-cropped, as diffusers' resize_and_crop_tensor.
    /// </summary>
    [Fact]
    public void ResolutionBinningMatchesDiffusers()
    {
        using var pipe = new PixArtSigmaPipeline(Components("sigma"));
        Assert.Equal((320, 192), PixArtAspectRatios.Classify(200, 120, PixArtAspectRatios.For(32)));
        Check(pipe, Embeds(negative: true) with { UseResolutionBinning = true, Height = 200, Width = 120, NumInferenceSteps = 3, GuidanceScale = 4.5 }, "t2i_binned", 11);
    }

    /// <summary>
    /// A swapped scheduler, as <c>pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)</c>:
    /// the DPM-Solver++ config's schedule under Euler Ancestral, whose step noise comes from the call's generator.
    /// </summary>
    [Fact]
    public void SwappedEulerAncestralSchedulerMatchesDiffusers()
    {
        var components = Components("sigma");
        components.UseScheduler("EulerAncestralDiscreteScheduler");
        Assert.Equal("EulerAncestralDiscreteScheduler", components.SchedulerClassName);
        using var pipe = new PixArtSigmaPipeline(components);
        Check(pipe, Embeds(negative: true) with { Height = 64, Width = 48, NumInferenceSteps = 4, GuidanceScale = 4.5 }, "t2i_euler_a", 5);
    }

    /// <summary>eta with a swapped DDIMScheduler (<c>from_config(config, clip_sample=False)</c>): diffusers'
    /// <c>prepare_extra_step_kwargs</c> passes it (and the generator) to DDIM's step, which adds eta-weighted noise.</summary>
    [Fact]
    public void DdimWithEtaMatchesDiffusers()
    {
        var components = Components("sigma");
        components.UseScheduler("ddim", new Dictionary<string, JsonNode> { ["clip_sample"] = false });
        using var pipe = new PixArtSigmaPipeline(components);
        Check(pipe, Embeds(negative: true) with { Height = 48, Width = 64, NumInferenceSteps = 4, GuidanceScale = 4.5, Eta = 0.7 }, "t2i_ddim_eta", 6);
    }

    public void Dispose()
    {
        foreach (var c in _components) c.Dispose();
        foreach (var t in _expected.Values) t.Dispose();
    }
}
