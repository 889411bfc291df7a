using DiffusersSharp.Images;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.ZImage;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines.ZImage;

/// <summary>
/// The Z-Image pipelines from prompt strings, on the whole tiny pipeline folder (<see cref="TinyZImagePipelineFolder"/>:
/// the qwen3 fixture's Qwen3 text encoder and tokenizer, a transformer with their width):
/// <list type="bullet">
/// <item>against diffusers' own ZImagePipeline / ZImageImg2ImgPipeline called with prompt strings, whose text encoder was
/// transformers' own Qwen3Model (fixture local-diffusers/z-image-prompt, tools/reference/z_image_prompt.py): the chat
/// template, tokenization, encoder, negative prompts ("" by default under CFG), num_images_per_prompt and truncation all in
/// the loop, every step's latents and the image within 1e-5 × max(1, max |expected|) (the Z-Image parity bound);</item>
/// <item>a prompt gives exactly what its <see cref="Qwen3PromptEncoder"/> embeddings give through the same pipeline;</item>
/// <item>loading with and without the text encoder, the width check, offload and disposal.</item>
/// </list>
/// </summary>
public sealed class ZImagePromptTests : IDisposable
{
    private const double Tolerance = 1e-5;
    private static readonly string[] EncodePrompts = ["A photo of a cat sitting on a wooden table, soft light.", "", "一幅为名为“造相”的项目设计的创意海报 😀 It's 2025!"];
    private static readonly string P0 = EncodePrompts[0], P2 = EncodePrompts[2];
    private const string Cat = "A photo of a cat";

    private readonly ITestOutputHelper _output;
    private readonly string _dir = Directory.CreateTempSubdirectory("zimage-prompt").FullName;
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/z-image-prompt/expected.safetensors");
    private readonly ZImageComponents _components;

    public ZImagePromptTests(ITestOutputHelper output)
    {
        _output = output;
        TinyZImagePipelineFolder.Write(_dir);
        _components = ZImageComponents.FromPretrained(_dir, new PipelineLoadOptions());
    }

    private void Check<T>(Func<T, ZImageOutput> generate, T request, string name, long seed) where T : ZImageRequest =>
        LocalDiffusersZImage.CheckCase(_output, _expected, Tolerance, generate, request, name, seed);

    [Fact]
    public void TheFixturePromptsAreTheQwen3FixturesOnes()
    {
        var cases = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Fixtures.Path("local-diffusers/qwen3/cases.json")))!;
        Assert.Equal(EncodePrompts, cases["encode_prompts"]!.AsArray().Select(p => p!.GetValue<string>()));
    }

    [Fact]
    public void APromptWithoutGuidanceMatchesDiffusers()
    {
        using var pipe = new ZImagePipeline(_components);
        Check(r => pipe.Generate(r), new ZImageRequest { Prompt = P0, Height = 64, Width = 64, NumInferenceSteps = 4, GuidanceScale = 0.0 }, "prompt", 42);
    }

    [Fact]
    public void GuidanceWithTheDefaultEmptyNegativePromptMatchesDiffusers()
    {
        using var pipe = new ZImagePipeline(_components);
        Check(r => pipe.Generate(r), new ZImageRequest { Prompt = P0, Height = 64, Width = 64, NumInferenceSteps = 3, GuidanceScale = 4.0 }, "prompt_cfg", 7);
    }

    [Fact]
    public void TwoPromptsWithNegativePromptsTwoImagesEachMatchDiffusers()
    {
        using var pipe = new ZImagePipeline(_components);
        Check(r => pipe.Generate(r), new ZImageRequest
        {
            Prompt = new[] { P0, P2 }, NegativePrompt = new[] { Cat, "" }, NumImagesPerPrompt = 2, Height = 32, Width = 48, NumInferenceSteps = 2,
            GuidanceScale = 3.0,
        }, "prompt_two", 123456);
    }

    [Fact]
    public void TruncatedPromptsMatchDiffusersAndAreReported()
    {
        using var pipe = new ZImagePipeline(_components);
        var truncated = new List<(string Tokenizer, int Length, int Limit)>();
        pipe.OnPromptTruncated = (tokenizer, length, limit) => truncated.Add((tokenizer, length, limit));
        Check(r => pipe.Generate(r), new ZImageRequest
        {
            Prompt = P2, NegativePrompt = Cat, MaxSequenceLength = 12, Height = 48, Width = 48, NumInferenceSteps = 3, GuidanceScale = 3.0,
        }, "prompt_truncated", 5);
        // Both sides, in both runs of the case; lengths with the chat template.
        Assert.Equal(4, truncated.Count);
        Assert.All(truncated, t => Assert.Equal(("tokenizer (Qwen2)", 12), (t.Tokenizer, t.Limit)));
        Assert.All(truncated, t => Assert.True(t.Length > 12));
    }

    [Fact]
    public void ImageToImageFromPromptsMatchesDiffusers()
    {
        using var pipe = new ZImageImg2ImgPipeline(_components);
        Check(r => pipe.Generate(r), new ZImageImg2ImgRequest
        {
            Prompt = P0, NegativePrompt = Cat, Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), Strength = 0.6, NumInferenceSteps = 4,
            GuidanceScale = 3.0,
        }, "i2i_prompt", 123);
    }

    /// <summary>A prompt request and the same request with the encoder's embeddings (each side encoded as the pipeline
    /// encodes it: the prompts as one batch, the negative prompts as another) give the same latents, bit for bit.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void APromptGivesExactlyWhatItsEncoderEmbeddingsGive(bool guided)
    {
        using var pipe = new ZImagePipeline(_components);
        var encoder = new Qwen3PromptEncoder(_components.Tokenizer!, _components.TextEncoder!);
        string[] prompts = [P0, P2], negatives = [Cat, ""];
        var request = new ZImageRequest
        {
            Height = 32, Width = 48, NumInferenceSteps = 2, GuidanceScale = guided ? 3.0 : 0.0, NumImagesPerPrompt = 2, OutputType = OutputType.Latent,
        };
        using var fromPrompts = pipe.Generate(request with
        {
            Prompt = prompts, NegativePrompt = guided ? (PromptList?)negatives : null, Generator = new Generator("cpu").ManualSeed(3),
        });
        var embeds = encoder.Encode(prompts);
        var negativeEmbeds = guided ? encoder.Encode(negatives) : null;
        try
        {
            using var fromEmbeds = pipe.Generate(request with
            {
                PromptEmbeds = embeds, NegativePromptEmbeds = negativeEmbeds, Generator = new Generator("cpu").ManualSeed(3),
            });
            Assert.Equal(0.0, TensorAssert.MaxAbsDiff(fromPrompts.Tensor!, fromEmbeds.Tensor!));
        }
        finally
        {
            foreach (var e in embeds.Concat(negativeEmbeds ?? [])) e.Dispose();
        }
        // Without a negative prompt under guidance, diffusers encodes "" for each prompt.
        if (!guided) return;
        using var defaultNegative = pipe.Generate(request with { Prompt = prompts, Generator = new Generator("cpu").ManualSeed(3) });
        var empty = encoder.Encode(["", ""]);
        var given = encoder.Encode(prompts);
        try
        {
            using var fromEmpty = pipe.Generate(request with { PromptEmbeds = given, NegativePromptEmbeds = empty, Generator = new Generator("cpu").ManualSeed(3) });
            Assert.Equal(0.0, TensorAssert.MaxAbsDiff(defaultNegative.Tensor!, fromEmpty.Tensor!));
        }
        finally
        {
            foreach (var e in empty.Concat(given)) e.Dispose();
        }
    }

    [Fact]
    public void TheFolderLoadsItsTextEncoderOrLeavesItOut()
    {
        Assert.NotNull(_components.TextEncoder);
        Assert.NotNull(_components.Tokenizer);
        Assert.Equal(64, _components.TextEncoder!.Config.HiddenSize);
        Assert.Contains("text_encoder", _components.LoadMilliseconds.Keys);

        // text_encoder=None: prompt embeddings run, prompt strings are refused before any compute.
        using var noText = ZImagePipeline.FromPretrained(_dir, new PipelineLoadOptions { LoadTextEncoders = false });
        Assert.Null(noText.Components.TextEncoder);
        Assert.Null(noText.Components.Tokenizer);
        var request = new ZImageRequest { Prompt = P0, Height = 32, Width = 32, NumInferenceSteps = 1, GuidanceScale = 0, OutputType = OutputType.Latent };
        Assert.Contains("Qwen3 text encoder", Assert.Throws<ArgumentException>(() => noText.Generate(request)).Message);
        using var pipe = new ZImagePipeline(_components);
        var embeds = new Qwen3PromptEncoder(_components.Tokenizer!, _components.TextEncoder!).Encode([P0]);
        try
        {
            using var a = pipe.Generate(request with { Generator = new Generator("cpu").ManualSeed(1) });
            using var b = noText.Generate(request with { Prompt = null, PromptEmbeds = embeds, Generator = new Generator("cpu").ManualSeed(1) });
            Assert.Equal(0.0, TensorAssert.MaxAbsDiff(a.Tensor!, b.Tensor!));
            // Under guidance the negative side needs the encoder too (diffusers requires negative_prompt_embeds then).
            Assert.Contains("negative_prompt_embeds", Assert.Throws<ArgumentException>(() => noText.Generate(request with
            {
                Prompt = null, PromptEmbeds = embeds, NegativePrompt = "blurry", GuidanceScale = 3,
            })).Message);
        }
        finally
        {
            foreach (var e in embeds) e.Dispose();
        }
    }

    [Fact]
    public void AFolderWithoutATextEncoderOrOfAnotherWidthIsRefusedBeforeAnyWeightsLoad()
    {
        string dir = Directory.CreateTempSubdirectory("zimage-width").FullName;
        try
        {
            // The parity fixture's transformer (cap_feat_dim 48) beside a Qwen3-4B config (hidden 2560) and no encoder weights.
            LocalDiffusersZImage.WriteFolder(dir);
            var e = Assert.Throws<InvalidDataException>(() => ZImageComponents.FromPretrained(dir, new PipelineLoadOptions()));
            Assert.Contains("hidden_size is 2560 but the transformer's cap_feat_dim is 48", e.Message);
            using (var embedsOnly = ZImageComponents.FromPretrained(dir, new PipelineLoadOptions { LoadTextEncoders = false }))
                Assert.Null(embedsOnly.TextEncoder);

            TinyZImagePipelineFolder.Write(dir);
            string index = Path.Combine(dir, "model_index.json");
            File.WriteAllText(index, File.ReadAllText(index).Replace("\"text_encoder\": [\"transformers\", \"Qwen3Model\"],", "", StringComparison.Ordinal));
            Assert.Contains("no 'text_encoder' component", Assert.Throws<InvalidDataException>(() => ZImageComponents.FromPretrained(dir, new PipelineLoadOptions())).Message);
            using (var embedsOnly = ZImageComponents.FromPretrained(dir, new PipelineLoadOptions { LoadTextEncoders = false }))
                Assert.Null(embedsOnly.TextEncoder);
        }
        finally { Directory.Delete(dir, true); }

        using var narrower = ZImageTransformer2DModel.FromPretrained(Fixtures.Path("local-diffusers/z-image/transformer"));
        Assert.Contains("cap_feat_dim", Assert.Throws<ArgumentException>(() => ZImageComponents.CheckFit(narrower, _components.Vae, _components.TextEncoder)).Message);
    }

    [Fact]
    public void OffloadedPromptRunEqualsThePlainRunAndMovesTheTextEncoderFirst()
    {
        using var offloaded = ZImagePipeline.FromPretrained(_dir, new PipelineLoadOptions { Offload = OffloadMode.Model });
        var moves = new List<ModelMove>();
        offloaded.Components.ModelMoved += moves.Add;
        using var plain = new ZImagePipeline(_components);
        var request = new ZImageRequest { Prompt = P0, NegativePrompt = Cat, Height = 32, Width = 32, NumInferenceSteps = 2, GuidanceScale = 3, OutputType = OutputType.Tensor };
        using var expected = plain.Generate(request with { Generator = new Generator("cpu").ManualSeed(2) });
        using var actual = offloaded.Generate(request with { Generator = new Generator("cpu").ManualSeed(2) });
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(actual.Tensor!, expected.Tensor!));
        // diffusers' model_cpu_offload_seq text_encoder->transformer->vae; the prompt and the negative prompt both encoded first.
        Assert.Equal(["text_encoder", "transformer", "vae"], moves.Where(m => m.ToExecutionDevice).Select(m => m.Component).Distinct());
        Assert.Equal("text_encoder", moves[0].Component);
        Assert.False(moves[^1].ToExecutionDevice);
    }

    [Fact]
    public void DisposingFreesTheTextEncoderWithTheOtherModelsAndRunsLeaveNoTensors()
    {
        var components = ZImageComponents.FromPretrained(_dir, new PipelineLoadOptions());
        var pipe = new ZImagePipeline(components);
        components.Dispose(); // the pipeline's reference keeps them
        var request = new ZImageRequest { Prompt = P0, Height = 32, Width = 32, NumInferenceSteps = 2, GuidanceScale = 3, OutputType = OutputType.Numpy };
        using (pipe.Generate(request)) { }
        long before = LiveTensors.Count();
        using (pipe.Generate(request)) { }
        Assert.Equal(before, LiveTensors.Count());
        var weights = components.TextEncoder!.parameters().Concat(components.Transformer.parameters()).ToList();
        Assert.DoesNotContain(weights, w => w.IsInvalid);
        pipe.Dispose(); // the last reference: every model is freed, the text encoder with them
        Assert.All(weights, w => Assert.True(w.IsInvalid));
        Assert.Throws<ObjectDisposedException>(() => pipe.Generate(request));
    }

    [Fact]
    public void CancellationDuringPromptEncodingStopsBeforeTheLoop()
    {
        using var pipe = new ZImagePipeline(_components);
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        int steps = 0;
        Assert.Throws<OperationCanceledException>(() => pipe.Generate(new ZImageRequest
        {
            Prompt = P0, Height = 32, Width = 32, NumInferenceSteps = 2, CallbackOnStepEnd = _ => steps++,
        }, null, cts.Token));
        Assert.Equal(0, steps);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _components.Dispose();
        foreach (var t in _expected.Values) t.Dispose();
        Directory.Delete(_dir, true);
    }
}
