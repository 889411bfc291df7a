using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Adapters;
using DiffusersSharp.Models.ControlNets;
using DiffusersSharp.Models.Unets;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// T2IAdapter against diffusers v0.36.0's own (fixture local-diffusers/t2i-adapter, made by tools/reference/t2i_adapter.py:
/// tiny adapters of each adapter_type drawn by diffusers' constructor under fixed seeds), and the tiny UNets taking their
/// feature maps as down_intrablock_additional_residuals (tiny-sd15 also together with a ControlNet's residuals). Float32
/// on the CPU. Measured (max |diff|): features full 1.8e-7 (of 1.26), light 1.8e-7, light_gray 1.8e-7, xl 2.1e-7; UNet
/// with the maps sd15 6.9e-7 (of 1.42), with ControlNet residuals too 6.3e-7, sdxl 7.0e-7 (of 1.21). Adding the maps
/// after DownBlock2D out of place (the skip state without them) misses by 7.4e-3 (sd15) and 0.15 (sdxl). The bound,
/// 1e-5 x max(1, max |expected|), is the ControlNet model tests'.
/// </summary>
public class T2IAdapterTests(ITestOutputHelper output)
{
    private const double Tolerance = 1e-5;
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/t2i-adapter/expected.safetensors");

    private static string Folder(string name) => Fixtures.Path($"local-diffusers/t2i-adapter/{name}");

    [Theory]
    [InlineData("full", "full_adapter", 4)]
    [InlineData("light", "light_adapter", 4)]
    [InlineData("light_gray", "light_adapter", 4)]
    [InlineData("xl", "full_adapter_xl", 4)]
    public void ForwardMatchesDiffusers(string name, string type, int maps)
    {
        using var adapter = T2IAdapter.FromPretrained(Folder(name));
        Assert.Equal(type, adapter.Config.AdapterType);
        using (var weights = WeightFiles.TryOpen(Folder(name))!)
        {
            var stateDict = adapter.state_dict();
            Assert.Equal(weights.Tensors.Keys.Order(), stateDict.Keys.Order());
            foreach (var (key, info) in weights.Tensors) Assert.Equal(info.Shape, stateDict[key].shape);
        }
        Assert.NotEmpty(Expected); // the shared expected tensors are loaded outside this test's dispose scope
        using var scope = NewDisposeScope();
        using var _ = inference_mode();
        var x = Expected[$"fwd.{name}.x"];
        var features = adapter.forward(x);
        Assert.Equal(maps, features.Length);
        var shapes = adapter.FeatureShapes(x.shape[0], x.shape[2], x.shape[3]);
        double worst = 0;
        for (int i = 0; i < maps; i++)
        {
            Assert.Equal(shapes[i], features[i].shape);
            worst = Math.Max(worst, TensorAssert.Close(features[i], Expected[$"fwd.{name}.f{i}"], Tolerance, $"{name} feature {i}"));
        }
        output.WriteLine($"{name}: {maps} feature maps, worst {worst:G3} (max |f0| {Expected[$"fwd.{name}.f0"].abs().max().item<float>():G3})");
    }

    [Theory]
    [InlineData("sd15", "tiny-sd15", "full")]
    [InlineData("sdxl", "tiny-sdxl", "xl")]
    public void UnetWithAdapterMapsMatchesDiffusers(string name, string unetModel, string adapter)
    {
        using var unet = UNet2DConditionModel.FromPretrained(Fixtures.Path($"{unetModel}/model/unet"));
        string p = $"fwd.{name}.";
        Assert.NotEmpty(Expected);
        using var scope = NewDisposeScope();
        using var _ = inference_mode();
        var (sample, t, states) = (Expected[p + "sample"], Expected["fwd.t"], Expected[p + "states"]);
        Expected.TryGetValue(p + "text_embeds", out var textEmbeds);
        Expected.TryGetValue(p + "time_ids", out var timeIds);
        var maps = Enumerable.Range(0, 4).Select(i => Expected[$"fwd.{adapter}.f{i}"]).ToArray();
        var copies = maps.Select(m => m.clone()).ToArray();
        var y = unet.forward(sample, t, states, textEmbeds, timeIds, downIntrablockAdditionalResiduals: copies);
        double err = TensorAssert.Close(y, Expected[p + "unet"], Tolerance, $"{name} unet with adapter maps");
        output.WriteLine($"{name} unet with adapter maps: {err:G3} (max |y| {Expected[p + "unet"].abs().max().item<float>():G3})");
        for (int i = 0; i < maps.Length; i++) Assert.Equal(0.0, TensorAssert.MaxAbsDiff(copies[i], maps[i])); // the caller's maps are not changed
        using var plain = unet.forward(sample, t, states, textEmbeds, timeIds);
        Assert.True(TensorAssert.MaxAbsDiff(plain, y) > 1e-2, "the adapter maps must change the output");
        if (name != "sd15") return;

        // With a ControlNet's residuals at the same time: the adapter's maps go inside the blocks first (for DownBlock2D in
        // place, so its last skip state carries them), then the ControlNet's residuals are added to the skip states.
        using var controlnet = ControlNetModel.FromPretrained(Fixtures.Path("local-diffusers/controlnet/sd15"));
        using var residuals = controlnet.forward(sample, t, states, Expected["fwd.sd15.cond"], 0.7);
        var both = unet.forward(sample, t, states, null, null, residuals.DownBlockResSamples, residuals.MidBlockResSample, downIntrablockAdditionalResiduals: maps);
        err = TensorAssert.Close(both, Expected["fwd.sd15.unet_controlnet"], Tolerance, "sd15 unet with ControlNet residuals and adapter maps");
        output.WriteLine($"sd15 unet with ControlNet residuals and adapter maps: {err:G3}");
    }

    [Fact]
    public void MultiAdapterSumsTheWeightedMapsInOrder()
    {
        using var full = T2IAdapter.FromPretrained(Folder("full"));
        using var light = T2IAdapter.FromPretrained(Folder("light"));
        Assert.NotEmpty(Expected);
        using var scope = NewDisposeScope();
        using var _ = inference_mode();
        var multi = new MultiAdapter([full, light]); // not disposed: the adapters' own usings free them
        var sum = multi.forward([Expected["fwd.full.x"], Expected["fwd.light.x"]], [0.7, 1.3]);
        var even = multi.forward([Expected["fwd.full.x"], Expected["fwd.light.x"]]);
        for (int i = 0; i < 4; i++)
        {
            // diffusers: w0 * f0, then += w1 * f1, the weights in float32 (torch.tensor of the list).
            var expected = Expected[$"fwd.full.f{i}"] * 0.7f + 1.3f * Expected[$"fwd.light.f{i}"];
            TensorAssert.Close(sum[i], expected, Tolerance, $"weighted map {i}");
            TensorAssert.Close(even[i], Expected[$"fwd.full.f{i}"] * 0.5f + 0.5f * Expected[$"fwd.light.f{i}"], Tolerance, $"even map {i}");
        }
        Assert.Contains("2 inputs", Assert.Throws<ArgumentException>(() => multi.forward([Expected["fwd.full.x"]])).Message);
        Assert.Contains("adapter_weights has 1", Assert.Throws<ArgumentException>(() => multi.forward([Expected["fwd.full.x"], Expected["fwd.light.x"]], [1.0])).Message);
        Assert.Contains("single adapter", Assert.Throws<ArgumentException>(() => new MultiAdapter([full])).Message);
        using var xl = T2IAdapter.FromPretrained(Folder("xl"));
        Assert.Contains("same downscaling behavior", Assert.Throws<ArgumentException>(() => new MultiAdapter([full, xl])).Message);
    }

    [Fact]
    public void MultiAdapterLoadsNumberedFoldersAsDiffusersSavesThem()
    {
        string root = Path.Combine(Path.GetTempPath(), "t2i-multi-" + Guid.NewGuid().ToString("N"));
        try
        {
            foreach (var (from, to) in new[] { ("full", root + "/adapter"), ("light", root + "/adapter_1") })
            {
                Directory.CreateDirectory(to);
                foreach (var file in Directory.GetFiles(Folder(from))) File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
            }
            using var multi = MultiAdapter.FromPretrained(root + "/adapter");
            Assert.Equal(["full_adapter", "light_adapter"], multi.Adapters.Select(a => a.Config.AdapterType));
            Assert.Equal(64, multi.TotalDownscaleFactor);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    // The configs of TencentARC/t2iadapter_canny_sd15v2, TencentARC/t2i-adapter-canny-sdxl-1.0 and TencentARC/t2iadapter_color_sd14v1.
    private const string FullSd15 = """{"in_channels": 1, "channels": [320, 640, 1280, 1280], "num_res_blocks": 2, "downscale_factor": 8, "adapter_type": "full_adapter"}""";
    private const string FullSdxl = """{"in_channels": 3, "channels": [320, 640, 1280, 1280], "num_res_blocks": 2, "downscale_factor": 16, "adapter_type": "full_adapter_xl"}""";
    private const string LightSd14 = """{"in_channels": 3, "channels": [320, 640, 1280], "num_res_blocks": 4, "downscale_factor": 8, "adapter_type": "light_adapter"}""";

    public static TheoryData<string, string, long, int> FullSizeCounts => new()
    {
        // diffusers' T2IAdapter(**config) (tools/reference/t2i_adapter.py prints them).
        { "full_adapter", FullSd15, 77_000_640, 38 },
        { "full_adapter_xl", FullSdxl, 79_028_160, 38 },
        { "light_adapter", LightSd14, 18_689_200, 80 },
    };

    [Theory]
    [MemberData(nameof(FullSizeCounts))]
    public void FullSizeAdaptersHaveDiffusersParameterCounts(string name, string json, long expected, int tensors)
    {
        var config = ConfigJson.Parse<T2IAdapterConfig>(json, name);
        using var model = new T2IAdapter(config, new Device(DeviceType.META));
        long count = model.parameters().Sum(p => p.numel());
        output.WriteLine($"{name}: {count:N0} parameters, {model.state_dict().Count} tensors");
        Assert.Equal(expected, count);
        Assert.Equal(tensors, model.state_dict().Count);
    }

    [Fact]
    public void FullSizeAdaptersFitTheirUnets()
    {
        string Config(string name) => File.ReadAllText(System.IO.Path.Combine(Fixtures.Root, "..", "Models", "UNetConfigs", name + ".json"));
        var meta = new Device(DeviceType.META);
        using var sd15 = new UNet2DConditionModel(ConfigJson.Parse<UNet2DConditionModelConfig>(Config("sd15")), meta);
        using var sdxl = new UNet2DConditionModel(ConfigJson.Parse<UNet2DConditionModelConfig>(Config("sdxl-base")), meta);
        using var full = new T2IAdapter(ConfigJson.Parse<T2IAdapterConfig>(FullSd15), meta);
        using var xl = new T2IAdapter(ConfigJson.Parse<T2IAdapterConfig>(FullSdxl), meta);
        using var light = new T2IAdapter(ConfigJson.Parse<T2IAdapterConfig>(LightSd14), meta);
        StableDiffusionComponents.CheckAdapter(light, sd15, 8);
        StableDiffusionComponents.CheckAdapter(full, sd15, 8);
        StableDiffusionComponents.CheckAdapter(xl, sdxl, 8);
        sd15.CheckIntrablockResidualShapes(full.FeatureShapes(1, 512, 512), 1, 64, 64);
        sdxl.CheckIntrablockResidualShapes(xl.FeatureShapes(1, 1024, 1024), 1, 128, 128);
        var e = Assert.Throws<ArgumentException>(() => StableDiffusionComponents.CheckAdapter(full, sdxl, 8));
        Assert.Contains("does not fit this UNet", e.Message);
    }

    [Fact]
    public void TheRegistryKnowsTheAdapter()
    {
        using var model = ModelRegistry.Build("adapter", "T2IAdapter", Folder("xl"), new Device(DeviceType.META));
        using var weights = WeightFiles.TryOpen(Folder("xl"))!;
        Assert.Equal(weights.Tensors.Values.Sum(t => t.ElementCount), model.parameters().Sum(p => p.numel()));
    }

    [Fact]
    public void BadInputsAreRejectedBeforeCompute()
    {
        using var adapter = T2IAdapter.FromPretrained(Folder("full"));
        using var unet = UNet2DConditionModel.FromPretrained(Fixtures.Path("tiny-sd15/model/unet"));
        using var scope = NewDisposeScope();
        Assert.Contains("in_channels = 3", Assert.Throws<ArgumentException>(() => adapter.forward(zeros(1, 1, 64, 80))).Message);
        Assert.Contains("multiples of its downscale_factor 8", Assert.Throws<ArgumentException>(() => adapter.forward(zeros(1, 3, 60, 80))).Message);

        var sample = zeros(1, 4, 8, 10);
        var text = zeros(1, 7, 32);
        var t = tensor(500f);
        var maps = adapter.forward(zeros(1, 3, 64, 80));
        var e = Assert.Throws<ArgumentException>(() => unet.forward(zeros(1, 4, 8, 8), t, text, downIntrablockAdditionalResiduals: maps));
        Assert.Equal("down_intrablock_additional_residuals", e.ParamName);
        Assert.Contains("down_intrablock_additional_residuals[0] must be [1, 32, 8, 8]", e.Message);
        e = Assert.Throws<ArgumentException>(() => unet.forward(sample, t, text, downIntrablockAdditionalResiduals: [.. maps, zeros(1, 64, 1, 2), zeros(1, 64, 1, 2)]));
        Assert.Contains("holds 6 feature maps, but this UNet takes at most 5", e.Message);
        // Fewer maps are taken by the first blocks (diffusers pops while any are left); a map at the mid block needs its shape.
        using var _ = inference_mode();
        unet.forward(sample, t, text, downIntrablockAdditionalResiduals: maps[..2]).Dispose();
        unet.forward(sample, t, text, downIntrablockAdditionalResiduals: [.. maps, zeros(1, 64, 1, 2)]).Dispose();
        Assert.Equal(new long[][] { [1, 32, 8, 10], [1, 32, 4, 5], [1, 64, 2, 3], [1, 64, 1, 2], [1, 64, 1, 2] }, unet.IntrablockResidualShapes(1, 8, 10));
    }

    [Fact]
    public void BadConfigsAreNamed()
    {
        var meta = new Device(DeviceType.META);
        Assert.Contains("adapter_type 'half_adapter'", Assert.Throws<NotSupportedException>(() => new T2IAdapter(new T2IAdapterConfig { AdapterType = "half_adapter" }, meta)).Message);
        Assert.Contains("channels[3] must equal channels[2]", Assert.Throws<ArgumentException>(() =>
            new T2IAdapter(new T2IAdapterConfig { AdapterType = "full_adapter_xl", Channels = [16, 32, 64, 32] }, meta)).Message);
        Assert.Contains("at least 4", Assert.Throws<ArgumentException>(() =>
            new T2IAdapter(new T2IAdapterConfig { AdapterType = "light_adapter", Channels = [2, 8] }, meta)).Message);
        Assert.Throws<DirectoryNotFoundException>(() => T2IAdapter.FromPretrained(Folder("missing")));
    }

    [Fact]
    public void WeightsOfAnotherConfigAreRefusedByTheStrictLoader()
    {
        string folder = Path.Combine(Path.GetTempPath(), "t2i-strict-" + Guid.NewGuid().ToString("N"));
        try
        {
            Directory.CreateDirectory(folder);
            File.Copy(Path.Combine(Folder("full"), "diffusion_pytorch_model.safetensors"), Path.Combine(folder, "diffusion_pytorch_model.safetensors"));
            // The light adapter's config against the full adapter's weights: every key differs.
            File.Copy(Path.Combine(Folder("light"), "config.json"), Path.Combine(folder, "config.json"));
            var e = Assert.Throws<WeightLoadException>(() => T2IAdapter.FromPretrained(folder));
            Assert.Contains("adapter.conv_in.weight", e.Message);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
