using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// The Flux transformer and pipelines against diffusers' own run on the tiny Flux model (fixture local-diffusers/flux, made
/// by tools/reference/flux.py with diffusers 0.36.0 on torch 1.13 CPU, float32; its README says how and why it is not a
/// shared fixture). Prompt embeddings come from the fixture, so CLIP / T5 are not part of this check. Measured here:
/// transformer 4.4e-6 (of 2.0); latents 3e-7 .. 7.2e-6 (inpainting, of 5.9) at every step; images 2.7e-6 .. 4.5e-6.
/// The bound, 1e-5 x max(1, max |expected|), sits about 2x above the worst of these (the images).
/// </summary>
public sealed class FluxParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-5;
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/flux/expected.safetensors");
    private readonly FluxComponents _components = LocalDiffusersFlux.Components();

    private Tensor E(string key) => _expected[key];

    private void Close(Tensor actual, string key, double tolerance = Tolerance) =>
        output.WriteLine($"{key}: max |diff| {TensorAssert.Close(actual, E(key), tolerance, key):G3}");

    [Fact]
    public void TransformerForwardMatchesDiffusers()
    {
        using var _ = inference_mode();
        using var actual = _components.Transformer.forward(E("tf.hidden_states"), E("tf.encoder_hidden_states"), E("tf.pooled"),
            E("tf.timestep"), E("tf.img_ids"), E("tf.txt_ids"), E("tf.guidance"));
        Close(actual, "tf.out");
    }

    private T WithPrompt<T>(T request, string name, long seed) where T : FluxRequest => request with
    {
        PromptEmbeds = E("in.prompt_embeds"), PooledPromptEmbeds = E("in.pooled"), Generator = new Generator("cpu").ManualSeed(seed),
        OutputType = OutputType.Latent, CallbackOnStepEnd = context => Close(context.Latents, $"{name}.step{context.Step}.latents"),
    };

    /// <summary>Runs the case twice, as the script does: latents (checked at every step), then the decoded image.</summary>
    private void Check<T>(Func<T, FluxOutput> generate, T request, string name, long seed) where T : FluxRequest
    {
        int steps = 0;
        var latentRun = WithPrompt(request, name, seed);
        var counting = latentRun with { CallbackOnStepEnd = context => { steps++; latentRun.CallbackOnStepEnd!(context); } };
        using (var latents = generate(counting)) Close(latents.Tensor!, $"{name}.latents");
        Assert.Equal(_expected.Keys.Count(k => k.StartsWith($"{name}.step", StringComparison.Ordinal)), steps);
        using var image = generate(WithPrompt(request, name, seed) with { OutputType = OutputType.Numpy, CallbackOnStepEnd = null });
        Close(image.Tensor!, $"{name}.image");
    }

    [Fact]
    public void TextToImageMatchesDiffusers()
    {
        using var pipe = new FluxPipeline(_components);
        Check(r => pipe.Generate(r), new FluxRequest { Height = 64, Width = 80, NumInferenceSteps = 4, GuidanceScale = 3.5 }, "t2i", 42);
    }

    [Fact]
    public void TrueCfgMatchesDiffusers()
    {
        using var pipe = new FluxPipeline(_components);
        Check(r => pipe.Generate(r), new FluxRequest
        {
            Height = 48, Width = 64, NumInferenceSteps = 3, GuidanceScale = 3.5, TrueCfgScale = 4.0,
            NegativePromptEmbeds = E("in.neg_prompt_embeds"), NegativePooledPromptEmbeds = E("in.neg_pooled"),
        }, "t2i_truecfg", 7);
    }

    [Fact]
    public void ImageToImageMatchesDiffusers()
    {
        using var pipe = new FluxImg2ImgPipeline(_components);
        Check(r => pipe.Generate(r), new FluxImg2ImgRequest
        {
            Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), Strength = 0.6, NumInferenceSteps = 10,
            GuidanceScale = 7.0, Height = 64, Width = 64,
        }, "i2i", 123456);
    }

    [Fact]
    public void InpaintingMatchesDiffusers()
    {
        using var pipe = new FluxInpaintPipeline(_components);
        Check(r => pipe.Generate(r), new FluxInpaintRequest
        {
            Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), MaskImage = ImageFile.Load(Fixtures.Path("tiny-sd3/mask.png")),
            Strength = 0.8, NumInferenceSteps = 5, GuidanceScale = 7.0, Height = 64, Width = 64,
        }, "inpaint", 42);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _components.Dispose();
        foreach (var t in _expected.Values) t.Dispose();
    }
}
