using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// StableDiffusion3ControlNetPipeline against diffusers 0.36.0's own run (fixture local-diffusers/sd3-controlnet, made by
/// tools/reference/sd3_controlnet.py on torch 1.13 CPU, float32): tiny-sd3 with the shared fixture's stored prompt
/// embeddings and tiny ControlNets the script drew (one from <c>from_transformer</c>; an SD3.5 kind without text input).
/// Checked: the control image's VAE encode (diffusers draws its posterior sample from torch's global generator, seeded by
/// the script before each call, here <c>ControlImageGenerator</c>), the shift only for SD3.5-kind ControlNets, zero or
/// prompt pooled projections, scale, guidance window, several ControlNets, every step's latents and the decode.
/// Measured here: latents within 8.4e-6 of each tensor's max (sd35 step 0: 7.6e-5 of 9.0; plain 1.3e-4 of 32), images
/// 4.3e-6 .. 2.4e-5 (cli: 2 steps); the same order as the SD3 local parity tests, whose comment says where it comes from
/// (torch 1.13's float32 exp in the timestep embedding).
/// Bounds as the SD3 local parity tests: 5e-5 x max(1, max |expected|) for latents, 5e-5 for images in [0, 1].
/// </summary>
public sealed class StableDiffusion3ControlNetParityTests(ITestOutputHelper output)
{
    private const double Tolerance = 5e-5;
    private static readonly Dictionary<string, Tensor> Shared = Fixtures.Expected();
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/sd3-controlnet/expected.safetensors");
    private static string Net(string name) => Fixtures.Path($"local-diffusers/sd3-controlnet/{name}");

    private void Close(Tensor actual, string key) =>
        output.WriteLine($"{key}: max |diff| {TensorAssert.Close(actual, Expected[key], Tolerance, key):G3} (max |expected| {Expected[key].abs().max().item<float>():G3})");

    private static StableDiffusion3ControlNetRequest Prepared(StableDiffusion3ControlNetRequest request, string embeds, long seed, long controlSeed,
        Action<StepEndContext>? onStep) => request with
    {
        PromptEmbeds = Shared[$"{embeds}.prompt_embeds"], NegativePromptEmbeds = Shared[$"{embeds}.negative_prompt_embeds"],
        PooledPromptEmbeds = Shared[$"{embeds}.pooled_prompt_embeds"], NegativePooledPromptEmbeds = Shared[$"{embeds}.negative_pooled_prompt_embeds"],
        Generator = new Generator("cpu").ManualSeed(seed), ControlImageGenerator = new Generator("cpu").ManualSeed(controlSeed),
        OutputType = OutputType.Latent, CallbackOnStepEnd = onStep,
    };

    private void Check(IReadOnlyList<string> nets, StableDiffusion3ControlNetRequest request, string name, string embeds, long seed, long controlSeed)
    {
        using var components = StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions(), nets.Select(Net).ToArray());
        using var pipe = new StableDiffusion3ControlNetPipeline(components);
        int steps = 0;
        using (var latents = pipe.Generate(Prepared(request, embeds, seed, controlSeed, c => { Close(c.Latents, $"{name}.step{c.Step}.latents"); steps++; })))
            Close(latents.Tensor!, $"{name}.latents");
        Assert.Equal(Expected.Keys.Count(k => k.StartsWith($"{name}.step", StringComparison.Ordinal)), steps);
        using var image = pipe.Generate(Prepared(request, embeds, seed, controlSeed, null) with { OutputType = OutputType.Numpy });
        Close(image.Tensor!, $"{name}.image");
    }

    private static PipelineImage InitImage => ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png"));

    [Fact]
    public void PlainMatchesDiffusers() => Check(["controlnet"], new StableDiffusion3ControlNetRequest
    {
        ControlImage = InitImage, NumInferenceSteps = 4, GuidanceScale = 4.5, Height = 64, Width = 64,
    }, "plain", "t2i", 123456, 1);

    [Fact]
    public void ScaleAndGuidanceWindowWithoutCfgMatchDiffusers() => Check(["controlnet"], new StableDiffusion3ControlNetRequest
    {
        ControlImage = InitImage, NumInferenceSteps = 4, GuidanceScale = 1.0, Height = 64, Width = 80,
        ControlNetConditioningScale = 0.6, ControlGuidanceStart = 0.25, ControlGuidanceEnd = 0.75,
    }, "window", "t2i_nocfg", 7, 2);

    [Fact]
    public void Sd35KindControlNetMatchesDiffusers() => Check(["controlnet-sd35"], new StableDiffusion3ControlNetRequest
    {
        ControlImage = InitImage, NumInferenceSteps = 3, GuidanceScale = 4.5, Height = 64, Width = 64, ControlNetConditioningScale = 0.8,
    }, "sd35", "t2i", 99, 3);

    [Fact]
    public void TwoControlNetsMatchDiffusers() => Check(["controlnet", "controlnet"], new StableDiffusion3ControlNetRequest
    {
        ControlImages = [InitImage, ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/mask.png"))], NumInferenceSteps = 4, GuidanceScale = 4.5,
        Height = 64, Width = 64, ControlNetConditioningScales = [0.5, 1.2], ControlGuidanceStarts = [0.0, 0.5], ControlGuidanceEnds = [0.5, 1.0],
    }, "multi", "t2i", 42, 4);

    [Fact]
    public void CliCaseMatchesDiffusers() => Check(["controlnet"], new StableDiffusion3ControlNetRequest
    {
        ControlImage = InitImage, NumInferenceSteps = 2, GuidanceScale = 1.0, Height = 64, Width = 64, ControlNetConditioningScale = 0.9,
    }, "cli", "t2i_nocfg", 5, 5);

    [Fact]
    public void InvalidInputsAreRefusedBeforeCompute()
    {
        using var components = StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions(), Net("controlnet"));
        using var pipe = new StableDiffusion3ControlNetPipeline(components);
        var ok = Prepared(new StableDiffusion3ControlNetRequest { ControlImage = InitImage, Height = 64, Width = 64, NumInferenceSteps = 1 }, "t2i", 1, 1, null);
        Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { ControlImage = null }));
        Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { ControlImages = [InitImage, InitImage], ControlImage = null }));
        Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { ControlGuidanceStart = 0.6, ControlGuidanceEnd = 0.5 }));
        Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { ControlNetConditioningScales = [1, 2] }));
        Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { SkipGuidanceLayers = [1] }));
        Assert.Throws<ArgumentException>(() => new StableDiffusion3ControlNetPipeline(TinySd3Pipeline.Shared));
        // diffusers feeds every ControlNet as the first: one with text input and one without cannot run together.
        var mixed = Assert.Throws<ArgumentException>(() => StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions(),
            [Net("controlnet"), Net("controlnet-sd35")]));
        Assert.Contains("of one kind", mixed.Message);
    }
}
