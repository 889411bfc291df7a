using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// CogView4Transformer2DModel beyond the pipeline parity (CogView4ParityTests runs it against diffusers at every step of
/// whole pipelines): the full-size parameter count, the inputs it must use, and refusals before compute. Weights are the
/// tiny fixture's (local-diffusers/cogview4/transformer).
/// </summary>
public sealed class CogView4TransformerTests(ITestOutputHelper output) : IDisposable
{
    private readonly CogView4Transformer2DModel _model = CogView4Transformer2DModel.FromPretrained(Fixtures.Path("local-diffusers/cogview4/transformer"));

    private static (Tensor X, Tensor Text, Tensor T, Tensor Size, Tensor Crop) Inputs(long batch = 2)
    {
        var g = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(5);
        var x = g.Randn([batch, 16, 8, 12], ScalarType.Float32, CPU);
        var text = g.Randn([batch, 7, 32], ScalarType.Float32, CPU);
        var t = full([batch], 500f);
        var size = tensor(new float[] { 64, 96 }).repeat(batch, 1);
        var crop = zeros(batch, 2);
        return (x, text, t, size, crop);
    }

    /// <summary>
    /// THUDM/CogView4-6B's config as we recall it (28 layers, 32 heads of 128, text 4096, time 512, condition 256; the hub
    /// file was not read here) built on meta has diffusers' parameter count: 6,369,118,272, from diffusers 0.39.0's own
    /// class at full width with 0 and 1 layers (24,922,176 and 251,500,608) extrapolated to 28.
    /// </summary>
    [Fact]
    public void FullSizeHasDiffusersParameterCount()
    {
        var config = new CogView4Transformer2DModelConfig
        {
            NumLayers = 28, AttentionHeadDim = 128, NumAttentionHeads = 32, TextEmbedDim = 4096, TimeEmbedDim = 512, ConditionDim = 256,
        };
        using var model = new CogView4Transformer2DModel(config, new Device(DeviceType.META));
        long elements = model.parameters().Sum(p => p.numel());
        output.WriteLine($"CogView4-6B: {elements:N0} parameters");
        Assert.Equal(6_369_118_272L, elements);
    }

    [Fact]
    public void TheTextTheTimestepAndTheSizeConditionsMatter()
    {
        using var _ = inference_mode();
        var (x, text, t, size, crop) = Inputs();
        using var baseline = _model.forward(x, text, t, size, size, crop);
        Assert.Equal(x.shape, baseline.shape);
        void Differs(Tensor other, string what)
        {
            using (other) Assert.True((other - baseline).abs().max().item<float>() > 1e-4, $"{what} does not change the output");
        }
        Differs(_model.forward(x, text * 2, t, size, size, crop), "the text");
        Differs(_model.forward(x, text, full([2], 100f), size, size, crop), "the timestep");
        Differs(_model.forward(x, text, t, size * 2, size, crop), "the original size");
        Differs(_model.forward(x, text, t, size, size * 2, crop), "the target size");
        Differs(_model.forward(x, text, t, size, size, crop + 8), "the crop");
        // The batch's samples are independent: the second alone gives the second row.
        using var second = _model.forward(x[1..], text[1..], t[1..], size[1..], size[1..], crop[1..]);
        TensorAssert.Close(second, baseline[1..], 1e-5, "second sample alone");
    }

    [Fact]
    public void BadInputsAreRefusedBeforeCompute()
    {
        using var _ = inference_mode();
        var (x, text, t, size, crop) = Inputs();
        string Refused(Action call) => Assert.Throws<ArgumentException>(call).Message;
        Assert.Contains("[B, 16, h, w]", Refused(() => _model.forward(x[.., ..3], text, t, size, size, crop)));
        Assert.Contains("multiples of patch_size 2", Refused(() => _model.forward(x[.., .., ..7], text, t, size, size, crop)));
        Assert.Contains("text_embed_dim", Refused(() => _model.forward(x, text[.., .., ..16], t, size, size, crop)));
        Assert.Contains("[B=2, S, 32]", Refused(() => _model.forward(x, text[..1], t, size, size, crop)));
        Assert.Contains("timestep must be [B=2]", Refused(() => _model.forward(x, text, t[..1], size, size, crop)));
        Assert.Contains("original_size must be [B=2, 2]", Refused(() => _model.forward(x, text, t, size[..1], size, crop)));
        Assert.Contains("target_size must be [B=2, 2]", Refused(() => _model.forward(x, text, t, size, size.view(-1), crop)));
        Assert.Contains("crop_coords must be [B=2, 2]", Refused(() => _model.forward(x, text, t, size, size, zeros(2, 3))));
        Assert.Contains("encoder_hidden_states must be a floating-point", Refused(() => _model.forward(x, text.to(ScalarType.Int32), t, size, size, crop)));
    }

    [Theory]
    [InlineData(6, "attention_head_dim must be a multiple of 4")]
    public void BadConfigsAreRefused(int headDim, string message)
    {
        var config = new CogView4Transformer2DModelConfig { AttentionHeadDim = headDim, NumAttentionHeads = 2 };
        Assert.Contains(message, Assert.Throws<ArgumentException>(() => new CogView4Transformer2DModel(config, new Device(DeviceType.META))).Message);
        Assert.Contains("rope_axes_dim", Assert.Throws<ArgumentException>(() => new CogView4Transformer2DModel(
            new CogView4Transformer2DModelConfig { RopeAxesDim = [256] }, new Device(DeviceType.META))).Message);
    }

    public void Dispose() => _model.Dispose();
}
