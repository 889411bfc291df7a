using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.ControlNets;
using DiffusersSharp.Models.Unets;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// ControlNetModel against diffusers v0.36.0's own (fixture local-diffusers/controlnet, made by
/// tools/reference/controlnet.py: tiny ControlNets from <c>ControlNetModel.from_unet</c> on tiny-sd15's and tiny-sdxl's
/// UNets with their zero convs re-drawn), and the UNet taking its residuals. Float32 on the CPU. Measured (max |diff|):
/// sd15 residuals 6.7e-7 (guess mode 5.5e-7), UNet with them 7.3e-7 on outputs of 1.06; sdxl 1.25e-6 on residuals of
/// 1.25 (guess 1.25e-6), UNet 1.25e-6 on 1.42. The bound, 1e-5 x max(1, max |expected|), sits about 8x above the worst.
/// </summary>
public class ControlNetModelTests(ITestOutputHelper output)
{
    private const double Tolerance = 1e-5;
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/controlnet/expected.safetensors");

    private static string Folder(string name) => Fixtures.Path($"local-diffusers/controlnet/{name}");

    private static string FullConfig(string name) =>
        File.ReadAllText(System.IO.Path.Combine(Fixtures.Root, "..", "Models", "ControlNetConfigs", name + ".json"));

    [Theory]
    [InlineData("sd15", "tiny-sd15")]
    [InlineData("sdxl", "tiny-sdxl")]
    public void ForwardAndUnetWithResidualsMatchDiffusers(string name, string unetModel)
    {
        using var controlnet = ControlNetModel.FromPretrained(Folder(name));
        using (var weights = WeightFiles.TryOpen(Folder(name))!)
        {
            var stateDict = controlnet.state_dict();
            Assert.Equal(weights.Tensors.Count, stateDict.Count);
            foreach (var (key, info) in weights.Tensors) Assert.Equal(info.Shape, stateDict[key].shape);
        }
        using var unet = UNet2DConditionModel.FromPretrained(Fixtures.Path($"{unetModel}/model/unet"));
        string p = $"fwd.{name}.";
        Assert.NotEmpty(Expected); // the shared expected tensors are loaded outside this test's dispose scope
        using var scope = NewDisposeScope();
        using var _ = inference_mode();
        var (sample, t, states, cond) = (Expected[p + "sample"], Expected[p + "t"], Expected[p + "states"], Expected[p + "cond"]);
        Expected.TryGetValue(p + "text_embeds", out var textEmbeds);
        Expected.TryGetValue(p + "time_ids", out var timeIds);

        foreach (var (mode, guess) in new[] { ("plain", false), ("guess", true) })
        {
            using var result = controlnet.forward(sample, t, states, cond, 0.7, guess, textEmbeds, timeIds);
            int count = Expected.Keys.Count(k => k.StartsWith($"{p}{mode}.down"));
            Assert.Equal(count, result.DownBlockResSamples.Length);
            double worst = 0;
            for (int i = 0; i < count; i++)
                worst = Math.Max(worst, TensorAssert.Close(result.DownBlockResSamples[i], Expected[$"{p}{mode}.down{i}"], Tolerance, $"{name} {mode} down {i}"));
            double mid = TensorAssert.Close(result.MidBlockResSample, Expected[$"{p}{mode}.mid"], Tolerance, $"{name} {mode} mid");
            output.WriteLine($"{name} {mode}: {count} down residuals, worst {worst:G3}; mid {mid:G3} " +
                             $"(max |mid| {Expected[$"{p}{mode}.mid"].abs().max().item<float>():G3})");
            if (guess) continue;
            var y = unet.forward(sample, t, states, textEmbeds, timeIds, result.DownBlockResSamples, result.MidBlockResSample);
            double err = TensorAssert.Close(y, Expected[p + "unet"], Tolerance, $"{name} unet with residuals");
            output.WriteLine($"{name} unet with residuals: {err:G3} (max |y| {Expected[p + "unet"].abs().max().item<float>():G3})");
        }
    }

    public static TheoryData<string, long, int> FullSizeCounts => new()
    {
        // diffusers' ControlNetModel.from_unet on each UNet config (tools/reference/controlnet_counts.py).
        { "sd15", 361_279_120, 340 },       // the layout of lllyasviel/sd-controlnet-*
        { "sd21", 364_228_240, 340 },
        { "sdxl-base", 1_251_014_160, 844 }, // the layout of diffusers/controlnet-*-sdxl-1.0
    };

    [Theory]
    [MemberData(nameof(FullSizeCounts))]
    public void FullSizeModelsHaveDiffusersParameterCounts(string name, long expected, int tensors)
    {
        var config = ConfigJson.Parse<ControlNetModelConfig>(FullConfig(name), name);
        using var model = new ControlNetModel(config, new Device(DeviceType.META));
        long count = model.parameters().Sum(p => p.numel());
        output.WriteLine($"{name}: {count:N0} parameters, {model.state_dict().Count} tensors");
        Assert.Equal(expected, count);
        Assert.Equal(tensors, model.state_dict().Count);
        Assert.Empty(model.buffers());
    }

    [Fact]
    public void TheRegistryKnowsTheControlNet()
    {
        using var model = ModelRegistry.Build("controlnet", "ControlNetModel", Folder("sd15"), new Device(DeviceType.META));
        using var weights = WeightFiles.TryOpen(Folder("sd15"))!;
        Assert.Equal(weights.Tensors.Values.Sum(t => t.ElementCount), model.parameters().Sum(p => p.numel()));
    }

    [Fact]
    public void BadInputsAreRejectedBeforeCompute()
    {
        using var controlnet = ControlNetModel.FromPretrained(Folder("sd15"));
        using var unet = UNet2DConditionModel.FromPretrained(Fixtures.Path("tiny-sd15/model/unet"));
        using var scope = NewDisposeScope();
        var sample = zeros(1, 4, 8, 10);
        var text = zeros(1, 7, 32);
        var t = tensor(500f);
        var e = Assert.Throws<ArgumentException>(() => controlnet.forward(sample, t, text, zeros(1, 3, 32, 40)));
        Assert.Equal("controlnet_cond", e.ParamName);
        Assert.Contains("[B=1, 3, 64, 80]", e.Message);
        e = Assert.Throws<ArgumentException>(() => controlnet.forward(sample, t, zeros(1, 7, 64), zeros(1, 3, 64, 80)));
        Assert.Equal("encoder_hidden_states", e.ParamName);

        using var result = controlnet.forward(sample, t, text, zeros(1, 3, 64, 80));
        e = Assert.Throws<ArgumentException>(() => unet.forward(sample, t, text, downBlockAdditionalResiduals: result.DownBlockResSamples));
        Assert.Equal("mid_block_additional_residual", e.ParamName);
        e = Assert.Throws<ArgumentException>(() => unet.forward(sample, t, text, null, null, result.DownBlockResSamples[1..], result.MidBlockResSample));
        Assert.Contains("must hold 12 tensors", e.Message);
        e = Assert.Throws<ArgumentException>(() => unet.forward(zeros(1, 4, 8, 8), t, text, null, null, result.DownBlockResSamples, result.MidBlockResSample));
        Assert.Equal("down_block_additional_residuals", e.ParamName);
    }

    [Fact]
    public void UnsupportedConfigsAreNamed()
    {
        var e = Assert.Throws<NotSupportedException>(() => new ControlNetModel(new ControlNetModelConfig { MidBlockType = "UNetMidBlock2D" }, new Device(DeviceType.META)));
        Assert.Contains("mid_block_type", e.Message);
        e = Assert.Throws<NotSupportedException>(() => new ControlNetModel(new ControlNetModelConfig { ControlnetConditioningChannelOrder = "xyz" }, new Device(DeviceType.META)));
        Assert.Contains("controlnet_conditioning_channel_order", e.Message);
    }
}
