using System.Text.Json.Nodes;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.PixArt;
using DiffusersSharp.Tests.Support;
using DiffusersSharp.Tokenizers;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// The PixArt pipelines beyond the parity fixture: T5 under the attention mask, prompt encoding as diffusers does it
/// (lower-cased, the negative prompt padded to the prompt's length), and validation before any compute. Components: the
/// tiny PixArt-Σ transformer of local-diffusers/pixart, tiny-sdxl's VAE, tiny-sd3's T5 and its tokenizer.
/// </summary>
public sealed class PixArtPipelineTests : IDisposable
{
    private readonly PixArtComponents _components = new()
    {
        Transformer = PixArtTransformer2DModel.FromPretrained(Fixtures.Path("local-diffusers/pixart/sigma/transformer")),
        Vae = AutoencoderKL.FromPretrained(Fixtures.Path("tiny-sdxl/model/vae")),
        TextEncoder = T5EncoderModel.FromPretrained(Fixtures.Path("tiny-sd3/model/text_encoder_3")),
        Tokenizer = T5Tokenizer.FromFolder(Fixtures.Path("tiny-sd3/model/tokenizer_3")),
        SchedulerConfig = (JsonObject)JsonNode.Parse(File.ReadAllText(Fixtures.Path("local-diffusers/pixart/scheduler/scheduler_config.json")))!,
        Device = CPU, Dtype = ScalarType.Float32,
    };

    [Fact]
    public void MaskedT5EqualsT5OnTheUnpaddedTokens()
    {
        // With the mask, padding is invisible to the kept tokens: their outputs equal those of the sequence without padding
        // (T5's bias depends on relative positions only). Without the mask they differ.
        using var _ = inference_mode();
        var t5 = _components.TextEncoder!;
        using var ids = tensor(new long[] { 37, 125, 9, 300, 1, 0, 0, 0 }, [1, 8]);
        using var mask = tensor(new long[] { 1, 1, 1, 1, 1, 0, 0, 0 }, [1, 8]);
        using var masked = t5.Forward(ids, mask);
        using var alone = t5.Forward(ids.narrow(1, 0, 5));
        using var unmasked = t5.Forward(ids);
        Assert.True(TensorAssert.MaxAbsDiff(masked.narrow(1, 0, 5), alone) < 1e-5);
        Assert.True(TensorAssert.MaxAbsDiff(unmasked.narrow(1, 0, 5), alone) > 1e-3);
        Assert.Throws<ArgumentException>(() => t5.Forward(ids, mask.narrow(1, 0, 7)));
    }

    [Fact]
    public void PromptsAreEncodedAsDiffusersDoes()
    {
        // The prompt run must equal the embeddings run with T5's output for the lower-cased prompt under its mask, and a
        // negative prompt padded to the same length (here max_sequence_length 16).
        using var pipe = new PixArtSigmaPipeline(_components);
        var t5 = _components.TextEncoder!;
        var tok = _components.Tokenizer!;
        (Tensor Embeds, Tensor Mask) Encode(string text)
        {
            var encoded = tok.Encode(text, 16);
            var ids = tensor(encoded.Ids.Select(i => (long)i).ToArray(), [1, 16]);
            var mask = tensor(Enumerable.Range(0, 16).Select(j => j < Math.Min(encoded.UntruncatedLength, 16) ? 1L : 0L).ToArray(), [1, 16]);
            using var _ = inference_mode();
            return (t5.Forward(ids, mask), mask);
        }
        var (embeds, mask) = Encode("a red cube on a table");
        var (neg, negMask) = Encode("blurry");
        var request = new PixArtRequest { UseResolutionBinning = false, Height = 32, Width = 48, NumInferenceSteps = 2, GuidanceScale = 3.0, MaxSequenceLength = 16, OutputType = OutputType.Latent };
        using var fromText = pipe.Generate(request with { Prompt = "  A Red Cube on a TABLE ", NegativePrompt = "Blurry", Generator = new Generator("cpu").ManualSeed(3) });
        using var fromEmbeds = pipe.Generate(request with
        {
            PromptEmbeds = embeds, PromptAttentionMask = mask, NegativePromptEmbeds = neg, NegativePromptAttentionMask = negMask,
            Generator = new Generator("cpu").ManualSeed(3),
        });
        Assert.True(TensorAssert.MaxAbsDiff(fromText.Tensor!, fromEmbeds.Tensor!) < 1e-5);
        using var other = pipe.Generate(request with { Prompt = "a red cube on a table", NegativePrompt = "sharp", Generator = new Generator("cpu").ManualSeed(3) });
        Assert.True(TensorAssert.MaxAbsDiff(fromText.Tensor!, other.Tensor!) > 1e-4);
    }

    [Fact]
    public void InvalidRequestsFailBeforeCompute()
    {
        using var pipe = new PixArtSigmaPipeline(_components);
        var ok = new PixArtRequest { UseResolutionBinning = false, Prompt = "x", Height = 32, Width = 32, NumInferenceSteps = 2 };
        Assert.Contains("clean_caption", Assert.Throws<NotSupportedException>(() => pipe.Generate(ok with { CleanCaption = true })).Message);
        Assert.Contains("positive", Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { UseResolutionBinning = true, Height = 0 })).Message);
        Assert.Contains("Invalid sample size", Assert.Throws<ArgumentException>(() => PixArtAspectRatios.For(48)).Message);
        Assert.Contains("multiples of 16", Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { Height = 40 })).Message);
        Assert.Contains("num_inference_steps", Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { NumInferenceSteps = 0 })).Message);
        Assert.Contains("num_images_per_prompt", Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { NumImagesPerPrompt = 0 })).Message);
        Assert.Contains("not both", Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { PromptEmbeds = zeros(1, 4, 96), PromptAttentionMask = ones(1, 4) })).Message);
        Assert.Contains("prompt_attention_mask", Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { Prompt = null, PromptEmbeds = zeros(1, 4, 96) })).Message);
        Assert.Contains("caption width", Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { Prompt = null, PromptEmbeds = zeros(1, 4, 95), PromptAttentionMask = ones(1, 4) })).Message);
        Assert.Contains("same shape", Assert.Throws<ArgumentException>(() => pipe.Generate(ok with
        {
            Prompt = null, PromptEmbeds = zeros(1, 4, 96), PromptAttentionMask = ones(1, 4), NegativePromptEmbeds = zeros(1, 5, 96), NegativePromptAttentionMask = ones(1, 5),
        })).Message);
        Assert.Contains("generators", Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { Generators = [new Generator("cpu"), new Generator("cpu")] })).Message);
        Assert.Contains("latents must be", Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { Latents = zeros(1, 4, 8, 8) })).Message);
        Assert.Contains("max_sequence_length", Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { MaxSequenceLength = 0 })).Message);
        Assert.Contains("eta must be", Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { Eta = -0.1 })).Message);
        Assert.Contains("eta must be", Assert.Throws<ArgumentException>(() => pipe.Generate(ok with { Eta = double.NaN })).Message);
    }

    [Fact]
    public void CancellationStopsBetweenSteps()
    {
        using var pipe = new PixArtSigmaPipeline(_components);
        using var cts = new CancellationTokenSource();
        int steps = 0;
        var request = new PixArtRequest
        {
            UseResolutionBinning = false, Prompt = "x", Height = 32, Width = 32, NumInferenceSteps = 4, MaxSequenceLength = 8, OutputType = OutputType.Latent,
            CallbackOnStepEnd = _ => { if (++steps == 2) cts.Cancel(); },
        };
        Assert.Throws<OperationCanceledException>(() => pipe.Generate(request, null, cts.Token));
        Assert.Equal(2, steps);
    }

    public void Dispose() => _components.Dispose();
}
