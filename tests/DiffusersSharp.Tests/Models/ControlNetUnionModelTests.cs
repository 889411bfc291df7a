using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.ControlNets;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// ControlNetUnionModel against diffusers v0.36.0's own (fixture local-diffusers/controlnet-union, made by
/// tools/reference/controlnet_union.py: a tiny ControlNet-Union from <c>ControlNetUnionModel.from_unet</c> on tiny-sdxl's
/// UNet with 8 control types, a 2-layer condition transformer and its zero-initialised parts re-drawn). Float32 on the
/// CPU, batch 2 with different latents, times and text per item (the condition transformer attends across the batch).
/// Measured (max |diff| over the residuals): two conditions with scales [0.7, 1.2] 1.2e-6 on residuals up to 4.8; one
/// condition (scale 0.8) 1.1e-6 on 3.0; two in guess mode 1.2e-6 on 1.7. The bound is the ControlNet tests'
/// 1e-5 x max(1, max |expected|).
/// </summary>
public class ControlNetUnionModelTests(ITestOutputHelper output)
{
    private const double Tolerance = 1e-5;
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/controlnet-union/expected.safetensors");
    private static readonly string Folder = Fixtures.Path("local-diffusers/controlnet-union/union");

    private static string FullConfig(string name) =>
        File.ReadAllText(System.IO.Path.Combine(Fixtures.Root, "..", "Models", "ControlNetConfigs", name + ".json"));

    private static Tensor ControlType(int types, int batch, params int[] modes)
    {
        var row = new float[types];
        foreach (int m in modes) row[m] = 1;
        return tensor(row).reshape(1, -1).repeat(batch, 1);
    }

    [Theory]
    [InlineData("two", new[] { 3, 1 }, new[] { 0.7, 1.2 }, false)]
    [InlineData("one", new[] { 6 }, new[] { 0.8 }, false)]
    [InlineData("two_guess", new[] { 3, 1 }, new[] { 0.7, 1.2 }, true)]
    public void ForwardMatchesDiffusers(string name, int[] modes, double[] scales, bool guess)
    {
        using var controlnet = ControlNetUnionModel.FromPretrained(Folder);
        Assert.NotEmpty(Expected); // the shared expected tensors are loaded outside this test's dispose scope
        using var scope = NewDisposeScope();
        using var _ = inference_mode();
        var conds = new[] { Expected["fwd.cond0"], Expected["fwd.cond1"] }.Take(modes.Length).ToArray();
        using var result = controlnet.forward(Expected["fwd.sample"], Expected["fwd.t"], Expected["fwd.states"], conds, ControlType(8, 2, modes), modes,
            scales, guessMode: guess, textEmbeds: Expected["fwd.text_embeds"], timeIds: Expected["fwd.time_ids"]);
        string p = $"fwd.{name}.";
        int count = Expected.Keys.Count(k => k.StartsWith(p + "down", StringComparison.Ordinal));
        Assert.Equal(count, result.DownBlockResSamples.Length);
        double worst = 0;
        for (int i = 0; i < count; i++)
            worst = Math.Max(worst, TensorAssert.Close(result.DownBlockResSamples[i], Expected[$"{p}down{i}"], Tolerance, $"{name} down {i}"));
        double mid = TensorAssert.Close(result.MidBlockResSample, Expected[p + "mid"], Tolerance, $"{name} mid");
        double largest = Expected.Where(kv => kv.Key.StartsWith(p, StringComparison.Ordinal)).Max(kv => kv.Value.abs().max().item<float>());
        output.WriteLine($"{name}: {count} down residuals, worst {worst:G3}; mid {mid:G3} (max |residual| {largest:G3})");
    }

    [Fact]
    public void LoadsTheDiffusersFolderStrictly()
    {
        using var controlnet = ControlNetUnionModel.FromPretrained(Folder);
        using var weights = WeightFiles.TryOpen(Folder)!;
        var stateDict = controlnet.state_dict();
        Assert.Equal(weights.Tensors.Count, stateDict.Count);
        foreach (var (key, info) in weights.Tensors) Assert.Equal(info.Shape, stateDict[key].shape);
        Assert.Contains("transformer_layes.1.attn.in_proj_weight", stateDict.Keys);
        Assert.Equal(8, controlnet.Config.NumControlType);
        Assert.True(ControlNetUnionModel.IsControlNetUnion(Folder));
        Assert.False(ControlNetUnionModel.IsControlNetUnion(Fixtures.Path("local-diffusers/controlnet/sdxl")));
        using var registry = ModelRegistry.Build("controlnet", "ControlNetUnionModel", Folder, new Device(DeviceType.META));
        Assert.Equal(weights.Tensors.Values.Sum(t => t.ElementCount), registry.parameters().Sum(p => p.numel()));
    }

    [Fact]
    public void AFolderWhoseConfigNamesControlNetModelIsKnownByItsWeights()
    {
        // A config written for other code (diffusers' ControlNetUnionModel.from_pretrained reads it all the same): the
        // weights' task_embedding tells it apart.
        string dir = Directory.CreateTempSubdirectory("union-config").FullName;
        try
        {
            File.WriteAllText(System.IO.Path.Combine(dir, "config.json"),
                File.ReadAllText(System.IO.Path.Combine(Folder, "config.json")).Replace("\"ControlNetUnionModel\"", "\"ControlNetModel\"", StringComparison.Ordinal));
            File.Copy(System.IO.Path.Combine(Folder, "diffusion_pytorch_model.safetensors"), System.IO.Path.Combine(dir, "diffusion_pytorch_model.safetensors"));
            Assert.True(ControlNetUnionModel.IsControlNetUnion(dir));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    public static TheoryData<string, long, int, int> FullSizeCounts => new()
    {
        // diffusers' ControlNetUnionModel.from_unet on the SDXL base UNet config (tools/reference/controlnet_union_counts.py).
        { "sdxl-union", 1_255_958_800, 863, 6 },        // the layout of xinsir/controlnet-union-sdxl-1.0
        { "sdxl-union-promax", 1_256_614_800, 863, 8 }, // brad-twinkl/controlnet-union-sdxl-1.0-promax (tile, repaint)
    };

    [Theory]
    [MemberData(nameof(FullSizeCounts))]
    public void FullSizeModelsHaveDiffusersParameterCounts(string name, long expected, int tensors, int types)
    {
        var config = ConfigJson.Parse<ControlNetUnionModelConfig>(FullConfig(name), name);
        Assert.Equal(types, config.NumControlType);
        using var model = new ControlNetUnionModel(config, new Device(DeviceType.META));
        long count = model.parameters().Sum(p => p.numel());
        output.WriteLine($"{name}: {count:N0} parameters, {model.state_dict().Count} tensors");
        Assert.Equal(expected, count);
        Assert.Equal(tensors, model.state_dict().Count);
        Assert.Empty(model.buffers());
    }

    [Fact]
    public void ConstructorDefaultsAreTheUnionModels()
    {
        // ControlNetUnionModel's own default conditioning embedding channels, not ControlNetModel's.
        Assert.Equal(new[] { 48, 96, 192, 384 }, new ControlNetUnionModelConfig().ConditioningEmbeddingOutChannels);
        Assert.Equal(new[] { 48, 96, 192, 384 }, ConfigJson.Parse<ControlNetUnionModelConfig>("{}").ConditioningEmbeddingOutChannels);
        Assert.Equal(new[] { 16, 32, 96, 256 }, ConfigJson.Parse<ControlNetUnionModelConfig>("{\"conditioning_embedding_out_channels\": [16, 32, 96, 256]}").ConditioningEmbeddingOutChannels);
    }

    [Fact]
    public void BadInputsAreRejectedBeforeCompute()
    {
        using var controlnet = ControlNetUnionModel.FromPretrained(Folder);
        using var scope = NewDisposeScope();
        var sample = zeros(1, 4, 8, 10);
        var text = zeros(1, 7, 64);
        var t = tensor(500f);
        var (textEmbeds, timeIds) = (zeros(1, 32), zeros(1, 6));
        var cond = zeros(1, 3, 64, 80);
        ControlNetOutput Run(Tensor[] conds, Tensor type, int[] modes, double[] scales) =>
            controlnet.forward(sample, t, text, conds, type, modes, scales, textEmbeds: textEmbeds, timeIds: timeIds);
        var e = Assert.Throws<ArgumentException>(() => Run([cond], ControlType(8, 1, 7), [8], [1.0]));
        Assert.Equal("control_type_idx", e.ParamName);
        Assert.Contains("0 to 7", e.Message);
        e = Assert.Throws<ArgumentException>(() => Run([cond, cond], ControlType(8, 1, 1), [1], [1.0, 1.0]));
        Assert.Equal("control_type_idx", e.ParamName);
        e = Assert.Throws<ArgumentException>(() => Run([cond], ControlType(8, 1, 1), [1], [1.0, 0.5]));
        Assert.Equal("conditioning_scale", e.ParamName);
        e = Assert.Throws<ArgumentException>(() => Run([cond], ControlType(6, 1, 1), [1], [1.0]));
        Assert.Equal("control_type", e.ParamName);
        e = Assert.Throws<ArgumentException>(() => Run([zeros(1, 3, 32, 40)], ControlType(8, 1, 1), [1], [1.0]));
        Assert.Equal("controlnet_cond", e.ParamName);
        e = Assert.Throws<ArgumentException>(() => Run([], ControlType(8, 1, 1), [], []));
        Assert.Equal("controlnet_cond", e.ParamName);
        e = Assert.Throws<ArgumentException>(() => controlnet.forward(sample, t, text, [cond], ControlType(8, 1, 1), [1], [1.0]));
        Assert.Equal("text_embeds", e.ParamName);
    }

    [Fact]
    public void UnsupportedConfigsAreNamed()
    {
        var meta = new Device(DeviceType.META);
        var sdxl = ConfigJson.Parse<ControlNetUnionModelConfig>(FullConfig("sdxl-union"));
        var e = Assert.Throws<NotSupportedException>(() => new ControlNetUnionModel(sdxl with { ControlnetConditioningChannelOrder = "bgr" }, meta));
        Assert.Contains("ControlNetUnionModel config: controlnet_conditioning_channel_order", e.Message);
        var a = Assert.Throws<ArgumentException>(() => new ControlNetUnionModel(sdxl with { NumTransChannel = 256 }, meta));
        Assert.Contains("num_trans_channel (256) must equal block_out_channels[0] (320)", a.Message);
        a = Assert.Throws<ArgumentException>(() => new ControlNetUnionModel(sdxl with { AdditionTimeEmbedDim = null }, meta));
        Assert.Contains("addition_time_embed_dim", a.Message);
        a = Assert.Throws<ArgumentException>(() => new ControlNetUnionModel(sdxl with { NumTransHead = 7 }, meta));
        Assert.Contains("multiple of num_trans_head", a.Message);
    }
}
