using System.Text.Json;
using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// Perturbed-Attention Guidance for SD3 against diffusers' own StableDiffusion3PAGPipeline and
/// StableDiffusion3PAGImg2ImgPipeline (fixture local-diffusers/sd3-pag, made by tools/reference/sd3_pag.py with diffusers
/// 0.36.0 on torch 1.13 CPU, float32) on tiny-sd3 given the shared fixture's prompt embeddings: PAG with and without
/// classifier-free guidance on diffusers' default layers "blocks.1" (the last, context_pre_only block), on the first
/// block's joint attention (beside its SD3.5 attn2) with two prompts whose embeddings end in 100 zero rows (run collapsed
/// on the CPU, and over the full sequence) and pag_adaptive_scale clamping the scale to 0 at the last step, and
/// image-to-image with one and two layers. tiny-sd3 has qk_norm: diffusers' PAG processors skip it in the PAG layers,
/// which this checks too. Every step's latents and the image within the SD3 parity bound 5e-5 x max(1, max |expected|).
/// Measured: latents 1.9e-5 .. 5.7e-4, relative to each tensor's max 2.6e-6 .. 3.6e-5 (i2i_nocfg_layers' last steps,
/// 3.4e-4 of 9.35); images 4e-6 .. 4.2e-5. That is the plain SD3 pipelines' difference (torch 1.13's float32 exp in the
/// timestep embedding, see <see cref="StableDiffusion3LocalParityTests"/>) times PAG's extrapolation (1 + pag_scale on the
/// text prediction): at timestep 0, where that embedding agrees, one float64 transformer pass with both blocks' PAG
/// processors, with and without CFG, matched diffusers' float64 pass within 3.2e-14 (checked once, not kept as a test).
/// </summary>
public sealed class StableDiffusion3PagParityTests(ITestOutputHelper output) : IClassFixture<TinySd3Pipeline>
{
    private const double Tolerance = 5e-5;
    private static readonly Dictionary<string, Tensor> Shared = Fixtures.Expected();
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/sd3-pag/expected.safetensors");
    private static readonly Dictionary<string, string[]> Layers =
        JsonSerializer.Deserialize<Dictionary<string, string[]>>(File.ReadAllText(Fixtures.Path("local-diffusers/sd3-pag/layers.json")))!;

    private double Close(Tensor actual, string key)
    {
        double error = TensorAssert.Close(actual, Expected[key], Tolerance, key);
        output.WriteLine($"{key}: max |diff| {error:G3}");
        return error;
    }

    /// <summary>The script's prompt embeddings of a case: the shared fixture's, or the zero-tailed pair of prompts.</summary>
    private static StableDiffusion3PAGRequest WithEmbeds(StableDiffusion3PAGRequest r, string embeds) => embeds == "zero_tail"
        ? r with
        {
            PromptEmbeds = Expected["in.zero_tail.prompt_embeds"], NegativePromptEmbeds = Expected["in.zero_tail.negative_prompt_embeds"],
            PooledPromptEmbeds = cat([Shared["t2i.pooled_prompt_embeds"], Shared["t2i_nocfg.pooled_prompt_embeds"]], 0),
            NegativePooledPromptEmbeds = cat([Shared["t2i.negative_pooled_prompt_embeds"], Shared["t2i_nocfg.negative_pooled_prompt_embeds"]], 0),
        }
        : r with
        {
            PromptEmbeds = Shared[$"{embeds}.prompt_embeds"], NegativePromptEmbeds = Shared[$"{embeds}.negative_prompt_embeds"],
            PooledPromptEmbeds = Shared[$"{embeds}.pooled_prompt_embeds"], NegativePooledPromptEmbeds = Shared[$"{embeds}.negative_pooled_prompt_embeds"],
        };

    /// <summary>The cases as sd3_pag.py runs them: name, embeddings, seed, layers, guidance, pag_scale, pag_adaptive_scale, width.</summary>
    public static readonly TheoryData<string, string, long, string[], double, double, double, int> Cases = new()
    {
        { "cfg_default", "t2i", 11, ["blocks.1"], 5.0, 3.0, 0.0, 64 },
        { "nocfg_default", "t2i_nocfg", 12, ["blocks.1"], 1.0, 2.5, 0.0, 80 },
        { "cfg_block0_adaptive", "zero_tail", 13, ["transformer_blocks.0.attn$"], 4.0, 4.0, 0.006, 64 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void PagMatchesDiffusers(string name, string embeds, long seed, string[] layers, double guidance, double pagScale, double adaptive, int width)
    {
        using var pipe = new StableDiffusion3PAGPipeline(TinySd3Pipeline.Shared);
        Assert.Equal(Layers[name], TinySd3Pipeline.Shared.Transformer.ResolvePagLayers(layers).Order(StringComparer.Ordinal));
        var request = WithEmbeds(new StableDiffusion3PAGRequest
        {
            NumInferenceSteps = 3, GuidanceScale = guidance, Height = 64, Width = width, PagScale = pagScale, PagAdaptiveScale = adaptive,
            PagAppliedLayers = layers,
        }, embeds);
        int steps = 0;
        using (var latents = pipe.Generate(request with
        {
            Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Latent,
            CallbackOnStepEnd = c =>
            {
                Assert.Equal(Expected[$"{name}.step{c.Step}.timestep"].item<float>(), c.Timestep);
                Close(c.Latents, $"{name}.step{c.Step}.latents");
                steps++;
            },
        }))
            Close(latents.Tensor!, $"{name}.latents");
        Assert.Equal(3, steps);
        using (var image = pipe.Generate(request with { Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Numpy }))
            Close(image.Tensor!, $"{name}.image");
        if (embeds == "zero_tail")
        {
            // The zero rows ran collapsed above (the CPU default); over the full sequence the perturbed mask is the same.
            using var full = pipe.Generate(request with
            {
                Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Latent, CollapseRepeatedText = false,
            });
            Close(full.Tensor!, $"{name}.latents");
        }
        // Not vacuous: without PAG (pag_scale 0) the latents land far from diffusers' PAG ones; that call is the plain
        // pipeline's, and the layers are plain attention again after the PAG calls.
        using var plain = pipe.Generate(request with { PagScale = 0, Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Latent });
        double difference = (plain.Tensor! - Expected[$"{name}.latents"]).abs().max().item<float>();
        output.WriteLine($"{name}: without PAG the final latents differ by {difference:G3}");
        Assert.True(difference > 1e-2, $"{name}: PAG changed the latents by only {difference}");
        using var plainPipe = new StableDiffusion3Pipeline(TinySd3Pipeline.Shared);
        using var plainAgain = plainPipe.Generate(ToPlain(request) with { Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Latent });
        Assert.Equal(0, (plainAgain.Tensor! - plain.Tensor!).abs().max().item<float>());
    }

    /// <summary>The image-to-image cases of sd3_pag.py: name, embeddings, seed, layers, strength, steps, guidance, pag_scale, pag_adaptive_scale.</summary>
    public static readonly TheoryData<string, string, long, string[], double, int, double, double, double> Img2ImgCases = new()
    {
        { "i2i_cfg_default", "t2i", 21, ["blocks.1"], 0.7, 5, 5.0, 3.0, 0.0 },
        { "i2i_nocfg_layers", "t2i_nocfg", 22, ["transformer_blocks.0.attn$", "blocks.1"], 0.9, 4, 1.0, 2.0, 0.002 },
    };

    [Theory]
    [MemberData(nameof(Img2ImgCases))]
    public void PagImageToImageMatchesDiffusers(string name, string embeds, long seed, string[] layers, double strength, int steps, double guidance,
        double pagScale, double adaptive)
    {
        using var pipe = new StableDiffusion3PAGImg2ImgPipeline(TinySd3Pipeline.Shared);
        Assert.Equal(Layers[name], TinySd3Pipeline.Shared.Transformer.ResolvePagLayers(layers).Order(StringComparer.Ordinal));
        var t2i = WithEmbeds(new StableDiffusion3PAGRequest(), embeds);
        var request = new StableDiffusion3PAGImg2ImgRequest
        {
            PromptEmbeds = t2i.PromptEmbeds, NegativePromptEmbeds = t2i.NegativePromptEmbeds, PooledPromptEmbeds = t2i.PooledPromptEmbeds,
            NegativePooledPromptEmbeds = t2i.NegativePooledPromptEmbeds, Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")),
            Strength = strength, NumInferenceSteps = steps, GuidanceScale = guidance, Height = 64, Width = 64, PagScale = pagScale,
            PagAdaptiveScale = adaptive, PagAppliedLayers = layers,
        };
        int count = 0;
        using (var latents = pipe.Generate(request with
        {
            Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Latent,
            CallbackOnStepEnd = c =>
            {
                Assert.Equal(Expected[$"{name}.step{c.Step}.timestep"].item<float>(), c.Timestep);
                Close(c.Latents, $"{name}.step{c.Step}.latents");
                count++;
            },
        }))
            Close(latents.Tensor!, $"{name}.latents");
        Assert.Equal(Expected.Keys.Count(k => k.StartsWith($"{name}.step", StringComparison.Ordinal) && k.EndsWith(".latents", StringComparison.Ordinal)), count);
        using (var image = pipe.Generate(request with { Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Numpy }))
            Close(image.Tensor!, $"{name}.image");
        // Not vacuous; and pag_scale 0 is the plain image-to-image pipeline's call, which refuses a PAG request.
        using var plain = pipe.Generate(request with { PagScale = 0, Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Latent });
        double difference = (plain.Tensor! - Expected[$"{name}.latents"]).abs().max().item<float>();
        output.WriteLine($"{name}: without PAG the final latents differ by {difference:G3}");
        Assert.True(difference > 1e-2, $"{name}: PAG changed the latents by only {difference}");
        using var plainPipe = new StableDiffusion3Img2ImgPipeline(TinySd3Pipeline.Shared);
        Assert.Throws<ArgumentException>(() => plainPipe.Generate(request));
        using var plainAgain = plainPipe.Generate(new StableDiffusion3Img2ImgRequest
        {
            PromptEmbeds = request.PromptEmbeds, NegativePromptEmbeds = request.NegativePromptEmbeds, PooledPromptEmbeds = request.PooledPromptEmbeds,
            NegativePooledPromptEmbeds = request.NegativePooledPromptEmbeds, Image = request.Image, Strength = strength, NumInferenceSteps = steps,
            GuidanceScale = guidance, Height = 64, Width = 64, Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Latent,
        });
        Assert.Equal(0, (plainAgain.Tensor! - plain.Tensor!).abs().max().item<float>());
    }

    /// <summary>The request's plain SD3 part.</summary>
    private static StableDiffusion3Request ToPlain(StableDiffusion3PAGRequest r) => new()
    {
        PromptEmbeds = r.PromptEmbeds, NegativePromptEmbeds = r.NegativePromptEmbeds, PooledPromptEmbeds = r.PooledPromptEmbeds,
        NegativePooledPromptEmbeds = r.NegativePooledPromptEmbeds, NumInferenceSteps = r.NumInferenceSteps, GuidanceScale = r.GuidanceScale,
        Height = r.Height, Width = r.Width,
    };

    [Fact]
    public void PagInputsAreCheckedBeforeCompute()
    {
        using var pipe = new StableDiffusion3PAGPipeline(TinySd3Pipeline.Shared);
        var request = WithEmbeds(new StableDiffusion3PAGRequest { NumInferenceSteps = 1, Height = 64, Width = 64 }, "t2i");
        var e = Assert.Throws<ArgumentException>(() => pipe.Generate(request with { PagAppliedLayers = ["blocks.7"] }));
        Assert.Contains("Cannot find PAG layer to set attention processor for: blocks.7", e.Message);
        Assert.Throws<ArgumentException>(() => pipe.Generate(request with { PagAppliedLayers = ["blocks.(1"] }));
        // "blocks.0" also finds block 0's SD3.5 attn2, on which diffusers' PAG processors fail (no text stream).
        e = Assert.Throws<ArgumentException>(() => pipe.Generate(request with { PagAppliedLayers = ["blocks.0"] }));
        Assert.Contains("transformer_blocks.0.attn2", e.Message);
        Assert.Throws<ArgumentException>(() => pipe.Generate(request with { PagScale = double.NaN }));
        Assert.Throws<ArgumentException>(() => pipe.Generate(request with { PagScale = -1 }));
        Assert.Throws<ArgumentException>(() => pipe.Generate(request with { PagAdaptiveScale = -0.1 }));
        Assert.Throws<ArgumentException>(() => pipe.Generate(request with { SkipGuidanceLayers = [1] }));
        // The plain pipeline does not take a PAG request.
        using var plain = StableDiffusion3Pipeline.FromPipe(pipe);
        Assert.Throws<ArgumentException>(() => plain.Generate(request));
        // A refused call leaves no layer perturbed: PAG can be turned on again.
        using (TinySd3Pipeline.Shared.Transformer.PerturbAttention(["blocks.1"], true)) { }
    }
}
