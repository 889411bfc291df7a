using DiffusersSharp.Images;
using DiffusersSharp.Models.ControlNets;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// The Flux ControlNet against diffusers 0.36.0's own run (fixture local-diffusers/flux-controlnet, made by
/// tools/reference/flux_controlnet.py on torch 1.13 CPU, float32): a tiny FluxControlNetModel drawn by diffusers'
/// <c>from_transformer</c> on local-diffusers/flux's transformer (one double- and one single-stream block, its
/// zero-initialised linears re-drawn), the transformer given its residuals, and FluxControlNetPipeline with local-diffusers/flux's
/// prompt embeddings (the control image resized and VAE-encoded with the call's generator before the noise; conditioning
/// scale; guidance window), every step's latents and the decoded image.
/// Bound: 1e-5 x max(1, max |expected|), about 3x above the worst measured (the image, 3.6e-6).
/// </summary>
public sealed class FluxControlNetParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-5;
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/flux-controlnet/expected.safetensors");
    private readonly FluxComponents _components = LocalDiffusersFlux.Components();
    private readonly FluxControlNetModel _controlNet = FluxControlNetModel.FromPretrained(Fixtures.Path("local-diffusers/flux-controlnet/controlnet"));

    private Tensor E(string key) => _expected[key];

    private void Close(Tensor actual, string key) =>
        output.WriteLine($"{key}: max |diff| {TensorAssert.Close(actual, E(key), Tolerance, key):G3} (max |expected| {E(key).abs().max().item<float>():G3})");

    [Fact]
    public void ControlNetAndTransformerForwardMatchDiffusers()
    {
        using var _ = inference_mode();
        var (blocks, singles) = _controlNet.forward(E("forward.hidden_states"), E("forward.controlnet_cond"), 0.7, E("forward.encoder_hidden_states"),
            E("forward.pooled_projections"), E("forward.timestep"), E("forward.img_ids"), E("forward.txt_ids"), E("forward.guidance"));
        Assert.Single(blocks);
        Assert.Single(singles);
        Close(blocks[0], "forward.controlnet.block0");
        Close(singles[0], "forward.controlnet.single0");
        using var transformed = _components.Transformer.forward(E("forward.hidden_states"), E("forward.encoder_hidden_states"),
            E("forward.pooled_projections"), E("forward.timestep"), E("forward.img_ids"), E("forward.txt_ids"), E("forward.guidance"), blocks, singles);
        Close(transformed, "forward.transformer");
    }

    [Fact]
    public void PipelineWithScaleAndWindowMatchesDiffusers()
    {
        using var components = LocalDiffusersFlux.Components(controlNet: "local-diffusers/flux-controlnet/controlnet");
        using var pipe = new FluxControlNetPipeline(components);
        var flux = Fixtures.Expected("local-diffusers/flux/expected.safetensors");
        FluxControlNetRequest Request(OutputType type, Action<StepEndContext>? onStep) => new()
        {
            PromptEmbeds = flux["in.prompt_embeds"], PooledPromptEmbeds = flux["in.pooled"],
            ControlImage = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), Height = 64, Width = 80, NumInferenceSteps = 4,
            GuidanceScale = 3.5, ControlNetConditioningScale = 0.6, ControlGuidanceStart = 0.25, ControlGuidanceEnd = 0.75,
            Generator = new Generator("cpu").ManualSeed(42), OutputType = type, CallbackOnStepEnd = onStep,
        };
        int steps = 0;
        using (var latents = pipe.Generate(Request(OutputType.Latent, c => { Close(c.Latents, $"window.step{c.Step}.latents"); steps++; })))
            Close(latents.Tensor!, "window.latents");
        Assert.Equal(4, steps);
        using var image = pipe.Generate(Request(OutputType.Numpy, null));
        Close(image.Tensor!, "window.image");
    }

    [Fact]
    public void UnionAndXLabsConfigsAndMissingControlNetAreRefusedByName()
    {
        var union = Assert.Throws<NotSupportedException>(() => new FluxControlNetModel(new FluxControlNetModelConfig { NumMode = 10 }, new Device("meta")));
        Assert.Contains("ControlNet-Union", union.Message);
        var xlabs = Assert.Throws<NotSupportedException>(() => new FluxControlNetModel(new FluxControlNetModelConfig { ConditioningEmbeddingChannels = 16 }, new Device("meta")));
        Assert.Contains("XLabs", xlabs.Message);
        var missing = Assert.Throws<ArgumentException>(() => new FluxControlNetPipeline(_components));
        Assert.Contains("ControlNet", missing.Message);
    }

    public void Dispose()
    {
        _controlNet.Dispose();
        _components.Dispose();
    }
}
