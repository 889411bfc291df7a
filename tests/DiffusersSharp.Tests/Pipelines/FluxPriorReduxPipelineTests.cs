using DiffusersSharp.Images;
using DiffusersSharp.Models.ImageEncoders;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// FLUX.1-Redux's prior with a Flux pipeline's text encoders (diffusers' experimental prompt input; the tiny Flux folder's
/// CLIP and T5, T5 of width 96 like the fixture's image embedder) and its input checks.
/// </summary>
public sealed class FluxPriorReduxPipelineTests(TinyFluxPipeline tiny, ITestOutputHelper output) : IClassFixture<TinyFluxPipeline>, IDisposable
{
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/flux-redux/expected.safetensors");

    /// <summary>
    /// The prompt is encoded once per image by the base pipeline's encoders (diffusers' encode_prompt with the prompt
    /// repeated per image, max_sequence_length 512), each image's T5 rows are followed by its image tokens, and the scaled
    /// rows are summed: checked against the prompt encoder's own output and diffusers' recorded image embeddings.
    /// </summary>
    [Fact]
    public void APromptIsEncodedByTheGivenTextEncodersOncePerImage()
    {
        using var prior = FluxPriorReduxParityTests.Load(tiny.Components);
        Assert.Same(tiny.Components, prior.TextEncoders);
        using var result = prior.Generate(new FluxPriorReduxRequest
        {
            Images = [FluxPriorReduxParityTests.Image(1), FluxPriorReduxParityTests.Image(2)], Prompt = new[] { "a red cat", "a blue dog" },
            PromptEmbedsScale = new[] { 0.7, 1.3 }, PooledPromptEmbedsScale = new[] { 0.4, 0.9 },
        });
        using var encoded = tiny.Components.CreatePromptEncoder().Encode(new[] { "a red cat", "a blue dog" }, null, null, null, 1, 512, CPU, ScalarType.Float32);
        var imageEmbeds = _expected["two.image_embeds"];
        using var text = encoded.PromptEmbeds;
        using var expected = (cat([text[0], imageEmbeds[0]], 0) * 0.7f + cat([text[1], imageEmbeds[1]], 0) * 1.3f).unsqueeze(0);
        using var expectedPooled = (encoded.PooledPromptEmbeds[0] * 0.4f + encoded.PooledPromptEmbeds[1] * 0.9f).unsqueeze(0);
        Assert.Equal([1L, 512 + 16, 96], result.PromptEmbeds.shape);
        output.WriteLine($"prompt embeds {TensorAssert.Close(result.PromptEmbeds, expected, 1e-5, "prompt embeds"):G3}, " +
                         $"pooled {TensorAssert.Close(result.PooledPromptEmbeds, expectedPooled, 1e-5, "pooled"):G3}");
        // The text part is really there: the T5 rows differ from zeros.
        Assert.True(result.PromptEmbeds[.., ..512].abs().max().item<float>() > 0.1f);
    }

    [Fact]
    public void OnePromptIsRepeatedForEveryImageAndPrompt2GoesToT5()
    {
        using var prior = FluxPriorReduxParityTests.Load(tiny.Components);
        using var repeated = prior.Generate(new FluxPriorReduxRequest
        {
            Images = [FluxPriorReduxParityTests.Image(1), FluxPriorReduxParityTests.Image(2)], Prompt = "a cat", Prompt2 = "a dog",
        });
        using var listed = prior.Generate(new FluxPriorReduxRequest
        {
            Images = [FluxPriorReduxParityTests.Image(1), FluxPriorReduxParityTests.Image(2)], Prompt = new[] { "a cat", "a cat" },
            Prompt2 = new[] { "a dog", "a dog" },
        });
        Assert.True(repeated.PromptEmbeds.equal(listed.PromptEmbeds).all().item<bool>());
        using var catOnly = prior.Generate(new FluxPriorReduxRequest { Image = FluxPriorReduxParityTests.Image(1), Prompt = "a cat" });
        using var dogT5 = prior.Generate(new FluxPriorReduxRequest { Image = FluxPriorReduxParityTests.Image(1), Prompt = "a cat", Prompt2 = "a dog" });
        Assert.True(catOnly.PooledPromptEmbeds.equal(dogT5.PooledPromptEmbeds).all().item<bool>()); // CLIP saw "a cat" both times
        Assert.False(catOnly.PromptEmbeds.equal(dogT5.PromptEmbeds).all().item<bool>());
    }

    public static TheoryData<string, Func<FluxPriorReduxRequest, FluxPriorReduxRequest>, string> BadRequests
    {
        get
        {
            var one = FluxPriorReduxParityTests.Image(1);
            var embeds = zeros(2, 8, 96);
            var pooled = zeros(2, 32);
            return new()
            {
                { "both image inputs", r => r with { Image = one }, "not both" },
                { "no image", r => r with { Images = null }, "Give an image" },
                { "empty list", r => r with { Images = [] }, "at least one image" },
                { "null image", r => r with { Images = [one, null!] }, "Images[1] is null" },
                { "scale list length", r => r with { PromptEmbedsScale = new[] { 1.0, 1.0, 1.0 } }, "3 prompt_embeds_scale weights were provided and 2 images" },
                { "pooled scale list length", r => r with { PooledPromptEmbedsScale = new[] { 1.0 } }, "1 pooled_prompt_embeds_scale weights" },
                { "nan scale", r => r with { PromptEmbedsScale = double.NaN }, "finite" },
                { "prompt and embeds", r => r with { Prompt = "a cat", PromptEmbeds = embeds, PooledPromptEmbeds = pooled }, "not both" },
                { "prompt_2 without prompt", r => r with { Prompt2 = "a dog" }, "prompt_2 needs a prompt" },
                { "embeds without pooled", r => r with { PromptEmbeds = embeds }, "pooled_prompt_embeds also have to be passed" },
                { "pooled without embeds", r => r with { PooledPromptEmbeds = pooled }, "needs prompt_embeds" },
                { "embeds rows", r => r with { PromptEmbeds = zeros(1, 8, 96), PooledPromptEmbeds = pooled }, "one row per image" },
                { "embeds width", r => r with { PromptEmbeds = zeros(2, 8, 64), PooledPromptEmbeds = pooled }, "txt_in_features" },
                { "pooled rows", r => r with { PromptEmbeds = embeds, PooledPromptEmbeds = zeros(1, 32) }, "pooled_prompt_embeds must be [2" },
            };
        }
    }

    [Theory]
    [MemberData(nameof(BadRequests))]
    public void BadRequestsAreRefusedBeforeAnyCompute(string what, Func<FluxPriorReduxRequest, FluxPriorReduxRequest> change, string message)
    {
        using var prior = FluxPriorReduxParityTests.Load();
        var request = change(new FluxPriorReduxRequest { Images = [FluxPriorReduxParityTests.Image(1), FluxPriorReduxParityTests.Image(2)] });
        var e = Assert.Throws<ArgumentException>(() => prior.Generate(request));
        output.WriteLine($"{what}: {e.Message}");
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void APromptNeedsTextEncodersAndOnePerImage()
    {
        using (var bare = FluxPriorReduxParityTests.Load())
        {
            var e = Assert.Throws<ArgumentException>(() => bare.Generate(new FluxPriorReduxRequest { Image = FluxPriorReduxParityTests.Image(1), Prompt = "a cat" }));
            Assert.Contains("no text encoders", e.Message);
        }
        using var prior = FluxPriorReduxParityTests.Load(tiny.Components);
        var wrong = Assert.Throws<ArgumentException>(() => prior.Generate(new FluxPriorReduxRequest
        {
            Images = [FluxPriorReduxParityTests.Image(1), FluxPriorReduxParityTests.Image(2)], Prompt = new[] { "a", "b", "c" },
        }));
        Assert.Contains("3 prompts were provided and 2 images", wrong.Message);
    }

    [Fact]
    public void PartsThatDoNotFitAndOtherFoldersAreRefused()
    {
        var folder = Fixtures.Path(FluxPriorReduxParityTests.Folder);
        using var encoder = SiglipVisionModel.FromPretrained(Path.Combine(folder, "image_encoder"));
        using var embedder = ReduxImageEncoder.FromPretrained(Path.Combine(folder, "image_embedder"));
        Assert.Contains("resizes to 30", Assert.Throws<ArgumentException>(() => new FluxPriorReduxPipeline(encoder, new SiglipImageProcessor(30), embedder)).Message);
        using var wide = new ReduxImageEncoder(new ReduxImageEncoderConfig { ReduxDim = 32, TxtInFeatures = 64 });
        Assert.Contains("txt_in_features (64)", Assert.Throws<ArgumentException>(() => new FluxPriorReduxPipeline(encoder, new SiglipImageProcessor(28), wide, tiny.Components)).Message);
        Assert.Contains("not FluxPriorReduxPipeline", Assert.Throws<InvalidDataException>(() => FluxPriorReduxPipeline.FromPretrained(tiny.Folder)).Message);
    }

    [Fact]
    public void TheTextEncodersStayLoadedWhileThePriorUsesThem()
    {
        using var components = FluxComponents.FromPretrained(tiny.Folder, new PipelineLoadOptions());
        var prior = FluxPriorReduxParityTests.Load(components);
        components.Dispose(); // the creator's reference: the prior still holds one
        using (var result = prior.Generate(new FluxPriorReduxRequest { Image = FluxPriorReduxParityTests.Image(1), Prompt = "a cat" }))
            Assert.Equal([1L, 512 + 16, 96], result.PromptEmbeds.shape);
        prior.Dispose();
        Assert.Throws<ObjectDisposedException>(() => prior.Generate(new FluxPriorReduxRequest { Image = FluxPriorReduxParityTests.Image(1) }));
        Assert.Throws<ObjectDisposedException>(() => FluxPriorReduxParityTests.Load(components));
    }

    public void Dispose()
    {
        foreach (var t in _expected.Values) t.Dispose();
    }
}
