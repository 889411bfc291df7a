using DiffusersSharp.Images;
using DiffusersSharp.Models;
using DiffusersSharp.Models.ImageEncoders;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// FLUX.1-Redux's prior against diffusers v0.36.0's own FluxPriorReduxPipeline (fixture local-diffusers/flux-redux, made on
/// this project's machine by tools/reference/flux_redux.py; see its README): a tiny Redux folder in FLUX.1-Redux-dev's
/// layout (SiglipVisionModel of width 32 at 28 x 28, ReduxImageEncoder 32 -> 96), whose SigLIP outputs came from
/// transformers' own modeling_siglip.py and whose pixel values from a stand-in for transformers' SiglipImageProcessor
/// (Pillow BICUBIC, rescale, normalize); the text part given as prompt_embeds / pooled_prompt_embeds (diffusers'
/// encode_prompt path), one image, two images with per-image scale lists and two with single scales; then diffusers'
/// FluxPipeline on local-diffusers/flux's tiny transformer given the prior's output. Float32 on the CPU, bound 1e-5 x
/// max(1, max |expected|) as the Flux parity tests. Measured (max |diff|): pixel values 0 (exact); SigLIP last hidden
/// state up to 1.2e-6 (of 2.9); image embeddings 1.3e-6 (of 2.0); prior prompt embeddings up to 1.8e-6 (of 5.4), pooled 0;
/// FluxPipeline given our prior's output: step latents up to 2.5e-6 (of 4.9), image 4.0e-6; the zeros path's image rows
/// 1.8e-6.
/// diffusers' zeros path (no text encoder) hard-codes [B, 512, 4096] / [B, 768], which no tiny embedder meets, so it is
/// checked on its own: zero rows, and image rows equal to diffusers' recorded image embeddings weighted and summed.
/// </summary>
public sealed class FluxPriorReduxParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-5;
    internal const string Folder = "local-diffusers/flux-redux/pipeline";
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/flux-redux/expected.safetensors");

    private Tensor E(string key) => _expected[key];

    private double Close(Tensor actual, string key, double tolerance = Tolerance)
    {
        double err = TensorAssert.Close(actual, E(key), tolerance, key);
        output.WriteLine($"{key}: max |diff| {err:G3} (max |expected| {E(key).abs().max().item<float>():G3})");
        return err;
    }

    internal static ImageBuffer Image(int i) => ImageFile.LoadRgb(Fixtures.Path($"local-diffusers/flux-redux/image{i}.png"));

    internal static FluxPriorReduxPipeline Load(FluxComponents? textEncoders = null) =>
        FluxPriorReduxPipeline.FromPretrained(Fixtures.Path(Folder), new PipelineLoadOptions(), textEncoders);

    [Fact]
    public void PixelValuesMatchTransformersSiglipImageProcessor()
    {
        var processor = SiglipImageProcessor.FromPretrained(Fixtures.Path($"{Folder}/feature_extractor"));
        Assert.Equal(28, processor.Size);
        using var one = processor.Preprocess([Image(1)]);
        Close(one, "image1.pixel_values", 0);
        using var two = processor.Preprocess([Image(1), Image(2)]);
        Close(two, "images.pixel_values", 0);
    }

    [Fact]
    public void SiglipAndImageEmbedderMatchTheReference()
    {
        using var prior = Load();
        using var _ = inference_mode();
        foreach (var name in new[] { "one", "two" })
        {
            using var pixels = prior.FeatureExtractor.Preprocess(name == "one" ? [Image(1)] : [Image(1), Image(2)]);
            using var encoded = prior.ImageEncoder.Forward(pixels);
            Close(encoded.LastHiddenState, $"{name}.last_hidden_state");
            // The embedder alone, on transformers' SigLIP output.
            using var embeds = prior.ImageEmbedder.forward(E($"{name}.last_hidden_state"));
            Close(embeds, $"{name}.image_embeds");
        }
    }

    public static TheoryData<string> Cases => new() { "one", "two", "two_scalar" };

    private static FluxPriorReduxRequest Request(string name, Tensor embeds, Tensor pooled) => name switch
    {
        "one" => new() { Image = Image(1), PromptEmbeds = embeds, PooledPromptEmbeds = pooled },
        "two" => new() { Images = [Image(1), Image(2)], PromptEmbeds = embeds, PooledPromptEmbeds = pooled, PromptEmbedsScale = new[] { 0.7, 1.3 }, PooledPromptEmbedsScale = new[] { 0.4, 0.9 } },
        "two_scalar" => new() { Images = [Image(1), Image(2)], PromptEmbeds = embeds, PooledPromptEmbeds = pooled, PromptEmbedsScale = 0.5, PooledPromptEmbedsScale = 0.8 },
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void PriorMatchesDiffusers(string name)
    {
        using var prior = Load();
        var embeds = E($"{name}.in.prompt_embeds");
        var pooled = E($"{name}.in.pooled_prompt_embeds");
        using var pooledBefore = pooled.clone();
        using var result = prior.Generate(Request(name, embeds, pooled));
        Close(result.PromptEmbeds, $"{name}.prompt_embeds");
        Close(result.PooledPromptEmbeds, $"{name}.pooled_prompt_embeds");
        // The caller's tensors are left as they were (diffusers scales pooled_prompt_embeds in place).
        Assert.True(pooled.equal(pooledBefore).all().item<bool>());
    }

    /// <summary>The prior's own output (ours) into FluxPipeline, against diffusers' prior output into diffusers' FluxPipeline.</summary>
    [Fact]
    public void PriorOutputIntoFluxPipelineMatchesDiffusersEndToEnd()
    {
        using var prior = Load();
        using var conditioning = prior.Generate(Request("two", E("two.in.prompt_embeds"), E("two.in.pooled_prompt_embeds")));
        using var components = LocalDiffusersFlux.Components();
        using var flux = new FluxPipeline(components);
        int steps = 0;
        FluxRequest With(OutputType type, bool record) => new()
        {
            PromptEmbeds = conditioning.PromptEmbeds, PooledPromptEmbeds = conditioning.PooledPromptEmbeds,
            Height = 64, Width = 64, NumInferenceSteps = 3, GuidanceScale = 2.5, Generator = new Generator("cpu").ManualSeed(0),
            OutputType = type,
            CallbackOnStepEnd = record ? c => { steps++; Close(c.Latents, $"flux.step{c.Step}.latents"); } : null,
        };
        using (var latents = flux.Generate(With(OutputType.Latent, true))) Close(latents.Tensor!, "flux.latents");
        Assert.Equal(3, steps);
        using var image = flux.Generate(With(OutputType.Numpy, false));
        Close(image.Tensor!, "flux.image");
    }

    /// <summary>
    /// diffusers' zeros path (no text encoders, no embeddings): [1, 512 + tokens, txt_in_features] whose first 512 rows are
    /// zero and whose image rows are the per-image scaled sum of the image embeddings diffusers recorded; pooled zeros of
    /// width 768.
    /// </summary>
    [Fact]
    public void WithoutTextTheTextPartIsZerosAndTheImageRowsAreTheWeightedEmbeddings()
    {
        using var prior = Load();
        using var result = prior.Generate(new FluxPriorReduxRequest { Images = [Image(1), Image(2)], PromptEmbedsScale = new[] { 0.7, 1.3 }, PooledPromptEmbedsScale = 0.4 });
        Assert.Equal([1L, 512 + 16, 96], result.PromptEmbeds.shape);
        Assert.Equal([1L, 768], result.PooledPromptEmbeds.shape);
        Assert.Equal(ScalarType.Float32, result.PromptEmbeds.dtype);
        Assert.Equal(0f, result.PromptEmbeds[.., ..512].abs().max().item<float>());
        Assert.Equal(0f, result.PooledPromptEmbeds.abs().max().item<float>());
        var embeds = E("two.image_embeds");
        using var expected = (embeds[0] * 0.7f + embeds[1] * 1.3f).unsqueeze(0);
        double err = TensorAssert.Close(result.PromptEmbeds[.., 512..], expected, Tolerance, "zeros path image rows");
        output.WriteLine($"zeros path image rows: max |diff| {err:G3}");
        Assert.True(expected.abs().max().item<float>() > 0.5f);
    }

    [Fact]
    public void TheFolderLoadsStrictlyAndInfoDescribesIt()
    {
        using var prior = Load();
        Assert.Equal(new ReduxImageEncoderConfig { ReduxDim = 32, TxtInFeatures = 96 }, prior.ImageEmbedder.Config);
        Assert.Equal(28, prior.ImageEncoder.Config.ImageSize);
        var info = ModelInspector.Inspect(Fixtures.Path(Folder));
        Assert.Equal("FluxPriorReduxPipeline", info.PipelineClass);
        Assert.Equal(["feature_extractor", "image_embedder", "image_encoder"], info.Components.Select(c => c.Name));
        var embedder = info.Components.Single(c => c.Name == "image_embedder");
        Assert.Equal(ComponentKind.Model, embedder.Kind);
        Assert.Equal(32L * 288 + 288 + 288 * 96 + 96, embedder.Elements);
        Assert.Equal(ComponentKind.ImageProcessor, info.Components.Single(c => c.Name == "feature_extractor").Kind);
        using var shell = ModelRegistry.Build("image_embedder", "ReduxImageEncoder", Fixtures.Path($"{Folder}/image_embedder"), new Device("meta"));
        Assert.Equal(embedder.Elements, shell.parameters().Sum(p => p.numel()));
    }

    public void Dispose()
    {
        foreach (var t in _expected.Values) t.Dispose();
    }
}
