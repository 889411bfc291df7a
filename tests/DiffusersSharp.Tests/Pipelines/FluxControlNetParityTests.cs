using DiffusersSharp.Models.ControlNets;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// The Flux ControlNet against diffusers 0.36.0's own run (fixture local-diffusers/flux-controlnet, made by
/// tools/reference/flux_controlnet.py on torch 1.13 CPU, float32): a tiny FluxControlNetModel drawn by diffusers'
/// <c>from_transformer</c> on local-diffusers/flux's transformer (one double- and one single-stream block, its
/// zero-initialised linears re-drawn), the transformer given its residuals.
/// Bounds as the Flux parity tests: 5e-5 x max(1, max |expected|).
/// </summary>
public sealed class FluxControlNetParityTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 5e-5;
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

    public void Dispose()
    {
        _controlNet.Dispose();
        _components.Dispose();
    }
}
