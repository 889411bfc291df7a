using System.Text.Json;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// Perturbed-Attention Guidance against diffusers' own StableDiffusionPAGPipeline / StableDiffusionXLPAGPipeline (fixture
/// local-diffusers/pag, made by tools/reference/pag.py with diffusers 0.36.0 on torch 1.13 CPU, float32) on tiny-sd15
/// (PNDM) and tiny-sdxl (Euler): PAG with and without classifier-free guidance, several layer selections (regular
/// expressions, as _set_pag_attn_processor resolves them: the fixture's layers.json lists diffusers' resolution), and
/// pag_adaptive_scale (SD 1.5's case clamps the scale to 0 at the last step); every step's latents and the image within
/// the UNet parity bound 5e-5 x max(1, max |expected|).
/// </summary>
public sealed class PagParityTests(ITestOutputHelper output)
{
    private const double Tolerance = 5e-5;
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/pag/expected.safetensors");
    private static readonly Dictionary<string, string[]> Layers =
        JsonSerializer.Deserialize<Dictionary<string, string[]>>(File.ReadAllText(Fixtures.Path("local-diffusers/pag/layers.json")))!;

    /// <summary>The cases as pag.py runs them: name, seed, layers, guidance, pag_scale, pag_adaptive_scale, images per prompt.</summary>
    public static readonly TheoryData<string, long, string[], double, double, double, int> Sd15Cases = new()
    {
        { "sd15_cfg_mid", 41, ["mid"], 6.0, 3.0, 0.0, 1 },
        { "sd15_nocfg_mid", 42, ["mid"], 1.0, 2.5, 0.0, 1 },
        { "sd15_cfg_layers", 43, ["down_blocks.1", "up_blocks.2.attentions.0"], 6.0, 3.0, 0.0, 1 },
        { "sd15_adaptive", 44, ["mid", "up_blocks.(1|3)"], 6.0, 5.0, 0.009, 2 },
    };

    /// <summary>The SDXL cases of pag.py.</summary>
    public static readonly TheoryData<string, long, string[], double, double, double, int> SdxlCases = new()
    {
        { "sdxl_cfg_mid", 51, ["mid"], 5.0, 3.0, 0.0, 1 },
        { "sdxl_nocfg_layers", 52, ["down_blocks.2.attentions.1", "up_blocks.0"], 1.0, 3.0, 0.0, 1 },
        { "sdxl_adaptive", 53, ["mid", "down_blocks.1"], 5.0, 4.0, 0.003, 1 },
    };

    [Theory]
    [MemberData(nameof(Sd15Cases))]
    public void StableDiffusionPagMatchesDiffusers(string name, long seed, string[] layers, double guidance, double pagScale, double adaptive, int images)
    {
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());
        using var pipe = new StableDiffusionPAGPipeline(components);
        Assert.Equal(Layers[name], components.Unet.ResolvePagLayers(layers).Order(StringComparer.Ordinal));
        var request = new StableDiffusionPAGRequest
        {
            PromptEmbeds = Expected["in.sd15.prompt_embeds"], NegativePromptEmbeds = Expected["in.sd15.negative_prompt_embeds"],
            NumInferenceSteps = 3, GuidanceScale = guidance, Height = 48, Width = 80, NumImagesPerPrompt = images,
            PagScale = pagScale, PagAdaptiveScale = adaptive, PagAppliedLayers = layers,
        };
        StepParity.Check(output, Expected, Tolerance, name, request, seed, r => pipe.Generate(r));
        AssertPagMatters(name, request with { PagScale = 0 }, seed, r => pipe.Generate(r));
    }

    [Theory]
    [MemberData(nameof(SdxlCases))]
    public void StableDiffusionXLPagMatchesDiffusers(string name, long seed, string[] layers, double guidance, double pagScale, double adaptive, int images)
    {
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), new PipelineLoadOptions());
        using var pipe = new StableDiffusionXLPAGPipeline(components);
        Assert.Equal(Layers[name], components.Unet.ResolvePagLayers(layers).Order(StringComparer.Ordinal));
        var request = new StableDiffusionPAGRequest
        {
            PromptEmbeds = Expected["in.sdxl.prompt_embeds"], NegativePromptEmbeds = Expected["in.sdxl.negative_prompt_embeds"],
            PooledPromptEmbeds = Expected["in.sdxl.pooled_prompt_embeds"], NegativePooledPromptEmbeds = Expected["in.sdxl.negative_pooled_prompt_embeds"],
            NumInferenceSteps = 3, GuidanceScale = guidance, Height = 64, Width = 64, NumImagesPerPrompt = images,
            PagScale = pagScale, PagAdaptiveScale = adaptive, PagAppliedLayers = layers,
        };
        StepParity.Check(output, Expected, Tolerance, name, request, seed, r => pipe.Generate(r));
        AssertPagMatters(name, request with { PagScale = 0 }, seed, r => pipe.Generate(r));
    }

    /// <summary>The same call without PAG (pag_scale 0: the plain pipeline's) lands far from diffusers' PAG latents, so the
    /// parity above is not vacuous; and the perturbed layers are back to plain attention after the call.</summary>
    private void AssertPagMatters(string name, StableDiffusionPAGRequest plain, long seed, Func<StableDiffusionPAGRequest, StableDiffusionPipelineOutput> generate)
    {
        using var output2 = generate(plain with { Generator = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(seed), OutputType = OutputType.Latent });
        double difference = (output2.Tensor! - Expected[$"{name}.latents"]).abs().max().item<float>();
        output.WriteLine($"{name}: without PAG the final latents differ by {difference:G3}");
        Assert.True(difference > 1e-2, $"{name}: PAG changed the latents by only {difference}");
    }

    [Fact]
    public void PagInputsAreCheckedBeforeCompute()
    {
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());
        using var pipe = new StableDiffusionPAGPipeline(components);
        var request = new StableDiffusionPAGRequest
        {
            PromptEmbeds = Expected["in.sd15.prompt_embeds"], NegativePromptEmbeds = Expected["in.sd15.negative_prompt_embeds"],
            NumInferenceSteps = 1, Height = 48, Width = 80,
        };
        // diffusers' docstring spelling "down.block_1" is a regex that finds no module ("down_blocks.1..."), so it is refused there too.
        var e = Assert.Throws<ArgumentException>(() => pipe.Generate(request with { PagAppliedLayers = ["down.block_1"] }));
        Assert.Contains("Cannot find PAG layer", e.Message);
        Assert.Throws<ArgumentException>(() => pipe.Generate(request with { PagAppliedLayers = ["up_blocks.(1"] }));
        // Only self-attention layers count: "attn2" names cross-attentions alone.
        Assert.Throws<ArgumentException>(() => pipe.Generate(request with { PagAppliedLayers = ["attn2"] }));
        Assert.Throws<ArgumentException>(() => pipe.Generate(request with { PagScale = double.NaN }));
        Assert.Throws<ArgumentException>(() => pipe.Generate(request with { PagScale = -1 }));
        Assert.Throws<ArgumentException>(() => pipe.Generate(request with { PagAdaptiveScale = -0.1 }));
        // Other modes' requests are not taken by the PAG pipeline, nor the PAG request by the plain one.
        using var plain = StableDiffusionPipeline.FromPipe(pipe);
        Assert.Throws<ArgumentException>(() => plain.Generate(request));
        // The UNet's layers are left as they were by a refused call.
        Assert.Equal(["mid_block.attentions.0.transformer_blocks.0.attn1"], components.Unet.ResolvePagLayers(["mid"]));
    }
}
