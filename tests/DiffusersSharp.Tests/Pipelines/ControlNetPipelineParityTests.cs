using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>tiny-sd15 and tiny-sdxl, each loaded with its tiny ControlNet of fixture local-diffusers/controlnet.</summary>
public sealed class LocalDiffusersControlNets : IDisposable
{
    /// <summary>Loads both.</summary>
    public LocalDiffusersControlNets()
    {
        Sd15 = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions(), Fixtures.Path("local-diffusers/controlnet/sd15"));
        Sdxl = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), new PipelineLoadOptions(), Fixtures.Path("local-diffusers/controlnet/sdxl"));
    }

    /// <summary>tiny-sd15 + its ControlNet.</summary>
    public StableDiffusionComponents Sd15 { get; }

    /// <summary>tiny-sdxl + its ControlNet.</summary>
    public StableDiffusionComponents Sdxl { get; }

    /// <inheritdoc />
    public void Dispose()
    {
        Sd15.Dispose();
        Sdxl.Dispose();
    }
}

/// <summary>
/// StableDiffusionControlNetPipeline and StableDiffusionXLControlNetPipeline against diffusers v0.36.0's own on the tiny
/// models (fixture local-diffusers/controlnet, made on this project's machine by tools/reference/controlnet.py; see its
/// README): conditioning scale, the image's default size and a resized control image, a guidance window, guess mode.
/// Prompt embeddings are the fixture's random inputs (no CLIP ran in Python). Float32 on the CPU; every step's latents,
/// the final latents and the decoded image are compared, and the timesteps exactly. Measured (max |diff|): sd15 latents
/// 1.6e-5 on latents of 23.9, image 1.2e-6; sd15_window 2.4e-5 on 32.4, 9.5e-7; sd15_guess 9.8e-6 on 21.5, 7.5e-7; sdxl
/// 1.7e-5 on 23.1, 9.5e-7; sdxl_window 2.2e-5 on 24.2, 9.5e-7; sdxl_guess 1.5e-5 on 26.5, 1.1e-6: at most 9.3e-7 of the
/// latents' size. The bound, 1e-5 x max(1, max |expected|), sits about 10x above the worst.
/// </summary>
public sealed class ControlNetPipelineParityTests(LocalDiffusersControlNets models, ITestOutputHelper output) : IClassFixture<LocalDiffusersControlNets>
{
    private const double Tolerance = 1e-5;
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/controlnet/expected.safetensors");

    private static Generator Seed(long seed) => new Generator("cpu").ManualSeed(seed);

    private static StableDiffusionControlNetRequest Sd15(StableDiffusionControlNetRequest r) => r with
    {
        Image = ImageFile.LoadRgb(Fixtures.Path("local-diffusers/controlnet/control.png")),
        PromptEmbeds = Expected["in.sd15.prompt_embeds"], NegativePromptEmbeds = Expected["in.sd15.neg_prompt_embeds"],
    };

    private static StableDiffusionControlNetRequest Sdxl(StableDiffusionControlNetRequest r) => r with
    {
        Image = ImageFile.LoadRgb(Fixtures.Path("local-diffusers/controlnet/control.png")),
        PromptEmbeds = Expected["in.sdxl.prompt_embeds"], PooledPromptEmbeds = Expected["in.sdxl.pooled"],
        NegativePromptEmbeds = Expected["in.sdxl.neg_prompt_embeds"], NegativePooledPromptEmbeds = Expected["in.sdxl.neg_pooled"],
    };

    private void Check(string name, StableDiffusionControlNetRequest request, long seed, Func<StableDiffusionControlNetRequest, StableDiffusionPipelineOutput> generate) =>
        StepParity.Check(output, Expected, Tolerance, name, request, seed, generate);

    [Fact]
    public void Sd15MatchesDiffusers()
    {
        using var pipe = new StableDiffusionControlNetPipeline(models.Sd15);
        Check("sd15", Sd15(new() { NumInferenceSteps = 8, ControlNetConditioningScale = 0.8 }), 11, r => pipe.Generate(r));
        Check("sd15_window", Sd15(new()
        {
            Height = 64, Width = 64, NumInferenceSteps = 10, ControlNetConditioningScale = 1.3, ControlGuidanceStart = 0.1, ControlGuidanceEnd = 0.6,
        }), 12, r => pipe.Generate(r));
        Check("sd15_guess", Sd15(new() { NumInferenceSteps = 8, GuidanceScale = 3.5, GuessMode = true }), 13, r => pipe.Generate(r));
    }

    [Fact]
    public void SdxlMatchesDiffusers()
    {
        using var pipe = new StableDiffusionXLControlNetPipeline(models.Sdxl);
        Check("sdxl", Sdxl(new() { NumInferenceSteps = 8, ControlNetConditioningScale = 0.7 }), 21, r => pipe.Generate(r));
        Check("sdxl_window", Sdxl(new()
        {
            Height = 64, Width = 64, NumInferenceSteps = 10, ControlNetConditioningScale = 1.2, ControlGuidanceStart = 0.2, ControlGuidanceEnd = 0.6,
        }), 22, r => pipe.Generate(r));
        Check("sdxl_guess", Sdxl(new() { NumInferenceSteps = 8, GuidanceScale = 4.0, GuessMode = true }), 23, r => pipe.Generate(r));
    }

    [Fact]
    public void BadControlNetInputsAreRejected()
    {
        using var pipe = new StableDiffusionControlNetPipeline(models.Sd15);
        var request = Sd15(new() { NumInferenceSteps = 2 });
        Assert.Contains("control guidance start", Assert.Throws<ArgumentException>(() => pipe.Generate(request with { ControlGuidanceStart = 0.7, ControlGuidanceEnd = 0.5 })).Message);
        Assert.Contains("can't be larger than 1.0", Assert.Throws<ArgumentException>(() => pipe.Generate(request with { ControlGuidanceEnd = 1.5 })).Message);
        Assert.Contains("image (the control image) is required", Assert.Throws<ArgumentException>(() => pipe.Generate(request with { Image = null })).Message);
        Assert.Throws<ArgumentException>(() => new StableDiffusionXLControlNetPipeline(models.Sd15));
        using var plain = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());
        Assert.Contains("no ControlNet", Assert.Throws<ArgumentException>(() => new StableDiffusionControlNetPipeline(plain)).Message);
        var e = Assert.Throws<ArgumentException>(() => StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions(),
            Fixtures.Path("local-diffusers/controlnet/sdxl")));
        Assert.Contains("does not fit this UNet", e.Message);
    }

    /// <summary>Under model offload the ControlNet travels inside the "unet" move (no move of its own). On the CPU the
    /// moves change no memory, so this checks the sequence and that the call runs, not where the weights went.</summary>
    [Fact]
    public void ModelOffloadRunsWithTheControlNetInTheUnetMove()
    {
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions { Offload = OffloadMode.Model },
            Fixtures.Path("local-diffusers/controlnet/sd15"));
        var moves = new List<string>();
        components.ModelMoved += m => moves.Add(m.ToString());
        using var pipe = new StableDiffusionControlNetPipeline(components);
        using var result = pipe.Generate(Sd15(new() { NumInferenceSteps = 2, Generator = Seed(1), OutputType = OutputType.Latent }));
        Assert.Equal(["unet -> cpu", "unet <- cpu"], moves);
    }
}
