using DiffusersSharp.IO;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Tests.IO;

public sealed class StrictLoadingTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("strict").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>A small module with a nested Linear, a custom parameter field and a persistent buffer.</summary>
    private sealed class Toy : nn.Module<Tensor, Tensor>
    {
#pragma warning disable IDE1006 // fields are named as checkpoint keys
        public Linear proj;
        public Parameter scale;
        public Tensor table;
#pragma warning restore IDE1006

        public Toy(Device? device = null) : base("Toy")
        {
            proj = new Linear(4, 3, device: device);
            scale = new Parameter(empty(4, device: device));
            table = empty(2, 2, device: device);
            register_buffer("table", table);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x) => proj.forward(x * scale) + table.sum();
    }

    private WeightFiles Save(Dictionary<string, Tensor> tensors)
    {
        string path = Path.Combine(_dir, $"{Guid.NewGuid():N}.safetensors");
        SafetensorsWriter.Save(path, tensors);
        return WeightFiles.Open([path]);
    }

    private static Dictionary<string, Tensor> Complete() => new()
    {
        ["proj.weight"] = ones(3, 4),
        ["proj.bias"] = full(3, 0.5f),
        ["scale"] = full(4, 2f),
        ["table"] = full(2, 2, 0.25f),
    };

    [Fact]
    public void LoadsIntoAMetaModuleOnTheRequestedDtype()
    {
        var model = new Toy(new Device("meta"));
        using var weights = Save(Complete());
        StateDictLoader.Load(model, weights, new WeightLoadOptions { Dtype = ScalarType.Float64 });
        Assert.All(model.parameters(), p => Assert.Equal(TorchSharp.DeviceType.CPU, p.device_type));
        Assert.Equal(ScalarType.Float64, model.proj.weight.dtype);
        Assert.Equal(ScalarType.Float64, model.table.dtype);
        using var y = model.forward(ones(1, 4, dtype: ScalarType.Float64));
        // each output: sum(1 * 2 * 1) over 4 inputs + 0.5 + table sum 1.0
        Assert.Equal(new[] { 9.5, 9.5, 9.5 }, y.data<double>().ToArray());
    }

    [Fact]
    public void ReportsMissingUnexpectedAndMismatchedKeysTogether()
    {
        var tensors = Complete();
        tensors.Remove("scale");
        tensors["proj.extra"] = zeros(1);
        tensors["proj.bias"] = zeros(4);
        using var weights = Save(tensors);
        var e = Assert.Throws<WeightLoadException>(() => StateDictLoader.Load(new Toy(new Device("meta")), weights));
        Assert.Equal(["scale"], e.Missing);
        Assert.Equal(["proj.extra"], e.Unexpected);
        Assert.Single(e.ShapeMismatches);
        Assert.Contains("proj.bias (checkpoint [4], model [3])", e.Message);
        Assert.Contains("1 missing: scale", e.Message);
        Assert.Contains("1 unexpected: proj.extra", e.Message);
    }

    [Fact]
    public void IgnoredAndAliasedKeys()
    {
        var tensors = Complete();
        tensors["legacy.position_ids"] = zeros(3);
        tensors["shared_scale"] = tensors["scale"];
        tensors.Remove("scale");
        using var weights = Save(tensors);
        var model = new Toy(new Device("meta"));
        StateDictLoader.Load(model, weights, new WeightLoadOptions
        {
            IgnoreUnexpected = k => k.EndsWith("position_ids", StringComparison.Ordinal),
            Aliases = new Dictionary<string, string> { ["scale"] = "shared_scale" },
        });
        Assert.Equal(new[] { 2f, 2f, 2f, 2f }, model.scale.data<float>().ToArray());
    }

    [Fact]
    public void FindsShardedAndVariantFiles()
    {
        string folder = Path.Combine(_dir, "sharded");
        Directory.CreateDirectory(folder);
        var all = Complete();
        SafetensorsWriter.Save(Path.Combine(folder, "model-00001-of-00002.safetensors"), all.Where(kv => kv.Key.StartsWith("proj")).ToDictionary());
        SafetensorsWriter.Save(Path.Combine(folder, "model-00002-of-00002.safetensors"), all.Where(kv => !kv.Key.StartsWith("proj")).ToDictionary());
        File.WriteAllText(Path.Combine(folder, "model.safetensors.index.json"),
            """{"metadata":{},"weight_map":{"proj.weight":"model-00001-of-00002.safetensors","proj.bias":"model-00001-of-00002.safetensors","scale":"model-00002-of-00002.safetensors","table":"model-00002-of-00002.safetensors"}}""");
        using (var weights = WeightFiles.TryOpen(folder)!)
        {
            Assert.Equal(2, weights.Files.Count);
            StateDictLoader.Load(new Toy(new Device("meta")), weights);
        }
        Assert.Throws<FileNotFoundException>(() => WeightFiles.TryOpen(folder, "fp16"));
        SafetensorsWriter.Save(Path.Combine(folder, "model.fp16.safetensors"), all.ToDictionary(kv => kv.Key, kv => kv.Value.to(ScalarType.Float16)));
        using var fp16 = WeightFiles.TryOpen(folder, "fp16")!;
        Assert.Equal(SafetensorsDtype.F16, fp16.Tensors["scale"].Dtype);
        Assert.Null(WeightFiles.TryOpen(Directory.CreateTempSubdirectory("empty").FullName));
    }
}
