using DiffusersSharp.IO;
using DiffusersSharp.Models.Unets;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// UNet2DConditionModel with diffusers' K-diffusion blocks (stabilityai/sd-x2-latent-upscaler's structure: KDownBlock2D,
/// KCrossAttnDownBlock2D, KCrossAttnUpBlock2D, KUpBlock2D, fourier time embedding, gelu, timestep_cond, no mid block, no
/// output norm, 1 x 1 convs) against diffusers' own forward (fixture local-diffusers/sd-latent-upscale, made by
/// tools/reference/sd_latent_upscale.py with diffusers 0.36.0 on torch 1.13 CPU, float32), within the UNet parity bound,
/// 5e-5 x max(1, max |expected|); strict loading of diffusers' keys; the size checks.
/// </summary>
public sealed class KUNetTests(ITestOutputHelper output)
{
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/sd-latent-upscale/expected.safetensors");
    private static string UnetFolder => Fixtures.Path("local-diffusers/sd-latent-upscale/model/unet");

    [Fact]
    public void TheKUNetLoadsStrictlyAndMatchesDiffusers()
    {
        using var unet = UNet2DConditionModel.FromPretrained(UnetFolder);
        Assert.True(unet.Config.IsKUNet);
        using (var weights = WeightFiles.TryOpen(UnetFolder)!)
            Assert.Equal(weights.Tensors.Count, unet.state_dict().Count);
        using var scope = NewDisposeScope();
        using var _ = inference_mode();
        var y = unet.forward(Expected["unet.sample"], Expected["unet.timestep"], Expected["unet.encoder_hidden_states"],
            timestepCond: Expected["unet.timestep_cond"]);
        double err = TensorAssert.Close(y, Expected["unet.out"], 5e-5, "unet.out");
        output.WriteLine($"unet.out: max |diff| {err:G3} (max |expected| {Expected["unet.out"].abs().max().item<float>():G3})");
    }

    [Fact]
    public void TheFullSizeLatentUpscalerUnetHasDiffusersCounts()
    {
        string full = Fixtures.Path("local-diffusers/sd-latent-upscale/full-size");
        var counts = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(full, "counts.json")))!["unet"]!;
        using var unet = new UNet2DConditionModel(ConfigJson.Read<UNet2DConditionModelConfig>(Path.Combine(full, "unet", "config.json")), new Device(DeviceType.META));
        long parameters = unet.parameters().Sum(p => p.numel());
        output.WriteLine($"sd-x2-latent-upscaler unet: {parameters:N0} parameters, {unet.state_dict().Count} tensors");
        Assert.Equal((long)counts["parameters"]!, parameters);
        Assert.Equal((long)counts["tensors"]!, unet.state_dict().Count);
    }

    [Fact]
    public void SidesTheKSamplersCannotTakeAreRefused()
    {
        using var unet = UNet2DConditionModel.FromPretrained(UnetFolder);
        using var scope = NewDisposeScope();
        var text = zeros(1, 7, 32);
        var cond = zeros(1, 160);
        Assert.Contains("multiples of 4, at least 8", Assert.Throws<ArgumentException>(() => unet.forward(zeros(1, 8, 12, 10), tensor(0.5f), text, timestepCond: cond)).Message);
        Assert.Contains("multiples of 4, at least 8", Assert.Throws<ArgumentException>(() => unet.forward(zeros(1, 8, 4, 8), tensor(0.5f), text, timestepCond: cond)).Message);
    }

    [Fact]
    public void KBlocksMixedWithOthersAreRefused()
    {
        var config = ConfigJson.Read<UNet2DConditionModelConfig>(Path.Combine(UnetFolder, "config.json"));
        var mixed = config with { DownBlockTypes = ["KDownBlock2D", "CrossAttnDownBlock2D", "KCrossAttnDownBlock2D"] };
        Assert.Contains("K-diffusion blocks mixed", Assert.Throws<NotSupportedException>(() => new UNet2DConditionModel(mixed, new Device(DeviceType.META))).Message);
        Assert.Contains("mid_block_type", Assert.Throws<NotSupportedException>(() =>
            new UNet2DConditionModel(config with { MidBlockType = "UNetMidBlock2DCrossAttn" }, new Device(DeviceType.META))).Message);
    }
}
