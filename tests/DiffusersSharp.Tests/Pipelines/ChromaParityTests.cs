using System.Text.Json;
using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Chroma;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// ChromaPipeline and ChromaImg2ImgPipeline against diffusers' own runs on the tiny Chroma model (fixture
/// local-diffusers/chroma, made by tools/reference/chroma.py with diffusers 0.36.0 on torch 1.13 CPU, float32): prompt
/// embeddings with Chroma's float text masks and CFG on negative embeddings, no CFG, custom sigmas, a non-square size,
/// image-to-image at strengths 0.6 and 0.9, and one run from prompts through the pipeline's own T5 path (transformers'
/// T5 on tiny-sd3's text_encoder_3 in the script, ours here) with two images per prompt. Latents are compared at every
/// step, then the final latents and the decoded image, each within 1e-5 × max(1, max |expected|) as the Flux parity
/// tests. Measured here: step and final latents 5.4e-7 .. 5.1e-6 (of up to 4.5), images 2.0e-6 .. 5.1e-6; T5 under the
/// tokenizer mask 1.3e-6.
/// </summary>
public sealed class ChromaParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-5;
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/chroma/expected.safetensors");
    private readonly ChromaComponents _components = LocalDiffusersChroma.Components();

    private Tensor E(string key) => _expected[key];

    private ChromaRequest Embeds(bool negative) => new()
    {
        PromptEmbeds = E("in.prompt_embeds"), PromptAttentionMask = E("in.prompt_attention_mask"),
        NegativePromptEmbeds = negative ? E("in.negative_prompt_embeds") : null,
        NegativePromptAttentionMask = negative ? E("in.negative_prompt_attention_mask") : null,
    };

    private double Check(ChromaPipeline pipe, ChromaRequest request, string name, long seed) =>
        FluxParity.Check((generator, outputType, callback) =>
        {
            var result = pipe.Generate(request with { Generator = generator, OutputType = outputType, CallbackOnStepEnd = callback });
            return (result.Tensor!, result);
        }, _expected, name, seed, Tolerance, output);

    private double Check(ChromaImg2ImgPipeline pipe, ChromaImg2ImgRequest request, string name, long seed) =>
        FluxParity.Check((generator, outputType, callback) =>
        {
            var result = pipe.Generate(request with { Generator = generator, OutputType = outputType, CallbackOnStepEnd = callback });
            return (result.Tensor!, result);
        }, _expected, name, seed, Tolerance, output);

    [Fact]
    public void TextToImageWithGuidanceMatchesDiffusers()
    {
        using var pipe = new ChromaPipeline(_components);
        Check(pipe, Embeds(negative: true) with { Height = 64, Width = 80, NumInferenceSteps = 4 }, "t2i", 42);
    }

    [Fact]
    public void TextToImageWithoutGuidanceMatchesDiffusers()
    {
        using var pipe = new ChromaPipeline(_components);
        Check(pipe, Embeds(negative: false) with { Height = 48, Width = 64, NumInferenceSteps = 3, GuidanceScale = 1.0 }, "t2i_nocfg", 7);
    }

    [Fact]
    public void CustomSigmasMatchDiffusers()
    {
        using var pipe = new ChromaPipeline(_components);
        Check(pipe, Embeds(negative: true) with { Height = 64, Width = 64, Sigmas = [1.0f, 0.8f, 0.5f, 0.2f], GuidanceScale = 3.0 }, "t2i_sigmas", 11);
    }

    [Fact]
    public void ImageToImageMatchesDiffusers()
    {
        using var pipe = new ChromaImg2ImgPipeline(_components);
        var image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png"));
        var request = new ChromaImg2ImgRequest
        {
            Image = image, Strength = 0.6, NumInferenceSteps = 10, Height = 64, Width = 64,
            PromptEmbeds = E("in.prompt_embeds"), PromptAttentionMask = E("in.prompt_attention_mask"),
            NegativePromptEmbeds = E("in.negative_prompt_embeds"), NegativePromptAttentionMask = E("in.negative_prompt_attention_mask"),
        };
        Check(pipe, request, "i2i", 123456);
    }

    [Fact]
    public void ImageToImageAtTheDefaultStrengthMatchesDiffusers()
    {
        using var pipe = new ChromaImg2ImgPipeline(_components);
        var request = new ChromaImg2ImgRequest
        {
            Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), NumInferenceSteps = 5, GuidanceScale = 1.0, Height = 64, Width = 80,
            PromptEmbeds = E("in.prompt_embeds"), PromptAttentionMask = E("in.prompt_attention_mask"),
        };
        Assert.Equal(0.9, request.Strength);
        Check(pipe, request, "i2i_default", 5);
    }

    [Fact]
    public void FromPromptsThroughT5WithTwoImagesPerPromptMatchesDiffusers()
    {
        using var components = LocalDiffusersChroma.Components(text: true);
        using var pipe = new ChromaPipeline(components);
        var prompts = Prompts();
        Check(pipe, new ChromaRequest
        {
            Prompt = prompts[0], NegativePrompt = prompts[1], NumImagesPerPrompt = 2, MaxSequenceLength = 256,
            Height = 64, Width = 64, NumInferenceSteps = 3, GuidanceScale = 4.0,
        }, "prompt", 123);
    }

    [Fact]
    public void GivenEmbeddingsAreRepeatedPerImageAsThePromptPathRepeatsThem()
    {
        // The prompt case again, from the T5 outputs the script recorded and the masks Chroma makes of the tokenizer's
        // (27 and 7 tokens kept, one padding token more): diffusers 0.36 cannot repeat given embeddings; this run must
        // give what its prompt path gave.
        using var pipe = new ChromaPipeline(_components);
        Tensor Mask(int kept) => (arange(256) <= kept).to(ScalarType.Float32).unsqueeze(0);
        Check(pipe, new ChromaRequest
        {
            PromptEmbeds = E("prompt.prompt_embeds"), PromptAttentionMask = Mask(27),
            NegativePromptEmbeds = E("prompt.negative_prompt_embeds"), NegativePromptAttentionMask = Mask(7),
            NumImagesPerPrompt = 2, Height = 64, Width = 64, NumInferenceSteps = 3, GuidanceScale = 4.0,
        }, "prompt", 123);
    }

    /// <summary>
    /// Our T5 tokenizer and mask logic against diffusers' <c>_get_t5_prompt_embeds</c> (fixture tok.*, four prompts, 2
    /// images per prompt, max_sequence_length 256): the ids and mask it handed to T5 (transformers' T5TokenizerFast output
    /// for tiny-sd3's tokenizer_3) and the transformer mask it returned, exactly; and our T5 under that mask against
    /// transformers' on the prompt case.
    /// </summary>
    [Fact]
    public void TokenizerAndMaskGiveWhatThePipelineBuilds()
    {
        using var components = LocalDiffusersChroma.Components(text: true);
        var prompts = Prompts();
        var indices = E("tok.prompt_index").data<float>().Select(i => (int)i).ToArray();
        var (ids, mask) = PromptTokens.IdsAndMask(components.Tokenizer!, indices.Select(i => prompts[i]).ToArray(), 256, CPU, "T5", null);
        using (ids)
        using (mask)
        {
            Assert.Equal(0, TensorAssert.MaxAbsDiff(ids, E("tok.input_ids")));
            Assert.Equal(0, TensorAssert.MaxAbsDiff(mask, E("tok.t5_attention_mask")));
            using var transformerMask = ChromaPipelineBase.TransformerTextMask(mask, ScalarType.Float32).repeat_interleave(2, dim: 0);
            Assert.Equal(0, TensorAssert.MaxAbsDiff(transformerMask, E("tok.attention_mask")));
            // "" keeps </s> and one padding token; "word" x 300 fills all 256 positions, so nothing is masked.
            Assert.Equal(2, transformerMask[2].sum().item<float>());
            Assert.Equal(256, transformerMask[4].sum().item<float>());
        }
        var (promptIds, promptMask) = PromptTokens.IdsAndMask(components.Tokenizer!, [prompts[0]], 256, CPU, "T5", null);
        using (promptIds)
        using (promptMask)
        using (var _ = inference_mode())
        using (var embeds = components.TextEncoder!.Forward(promptIds, promptMask))
            output.WriteLine($"T5 under the tokenizer mask: max |diff| {TensorAssert.Close(embeds, E("prompt.prompt_embeds"), 1e-4, "T5"):G3}");
    }

    private static string[] Prompts()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Fixtures.Path("tiny-sd3/tokenizers.json")));
        return doc.RootElement.GetProperty("prompts").EnumerateArray().Select(p => p.GetString()!).ToArray();
    }

    [Fact]
    public void CallbackCanStopGuidanceAndInterrupt()
    {
        // Guidance set to 1 after step 0 drops the negative pass from then on; an interrupt after step 1 decodes those latents.
        using var pipe = new ChromaPipeline(_components);
        int steps = 0;
        using var result = pipe.Generate(Embeds(negative: true) with
        {
            Height = 64, Width = 80, NumInferenceSteps = 4, Generator = new Generator("cpu").ManualSeed(42), OutputType = OutputType.Latent,
            CallbackOnStepEnd = c => { steps++; c.GuidanceScale = 1.0; c.Interrupt = c.Step == 1; },
        });
        Assert.Equal(2, steps);
        Assert.True(TensorAssert.MaxAbsDiff(result.Tensor!, E("t2i.step1.latents")) > 1e-4); // step 1 ran without guidance
    }

    public void Dispose() => _components.Dispose();
}
