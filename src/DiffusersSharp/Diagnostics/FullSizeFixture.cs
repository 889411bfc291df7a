using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.Transformers;
using static TorchSharp.torch;

namespace DiffusersSharp.Diagnostics;

/// <summary>
/// The full-size parity fixture: <c>meta.json</c> (configs, seeds, key counts, diffusers' timing) and
/// <c>expected.safetensors</c> (diffusers' bf16 outputs, stored as float32) of the SD3.5-Medium transformer and the SD3
/// VAE with weights drawn by <see cref="Benchmarks.RandomWeights.Fill"/>'s procedure on CUDA.
/// </summary>
public sealed class FullSizeFixture
{
    /// <summary>The fixture's meta.json file name.</summary>
    public const string MetaFileName = "meta.json";

    /// <summary>The fixture's tensor file name.</summary>
    public const string ExpectedFileName = "expected.safetensors";

    /// <summary>The folder holding both files.</summary>
    public string Folder { get; }

    /// <summary>The transformer's config (SD3.5-Medium).</summary>
    public SD3Transformer2DModelConfig TransformerConfig { get; }

    /// <summary>The transformer's seed for <c>torch.cuda.manual_seed</c>.</summary>
    public long TransformerSeed { get; }

    /// <summary>The number of state_dict keys diffusers drew for the transformer.</summary>
    public int TransformerKeys { get; }

    /// <summary>diffusers' milliseconds per transformer forward where the fixture was made (null when absent).</summary>
    public double? ReferenceTransformerForwardMs { get; }

    /// <summary>The VAE's config (SD3).</summary>
    public AutoencoderKLConfig VaeConfig { get; }

    /// <summary>The VAE's seed.</summary>
    public long VaeSeed { get; }

    /// <summary>The number of state_dict keys diffusers drew for the VAE.</summary>
    public int VaeKeys { get; }

    /// <summary>The GPU the fixture was made on.</summary>
    public string? Machine { get; }

    private FullSizeFixture(string folder, JsonObject meta)
    {
        Folder = folder;
        string source = Path.Combine(folder, MetaFileName);
        JsonObject Section(string name) => meta[name] as JsonObject ?? throw new InvalidDataException($"{source}: no \"{name}\" object.");
        JsonNode Field(JsonObject section, string sectionName, string name) =>
            section[name] ?? throw new InvalidDataException($"{source}: \"{sectionName}\" has no \"{name}\".");
        var t = Section("transformer");
        var v = Section("vae");
        TransformerConfig = ConfigJson.Parse<SD3Transformer2DModelConfig>(Field(t, "transformer", "config").ToJsonString(), source + " transformer.config");
        TransformerSeed = Field(t, "transformer", "seed").GetValue<long>();
        TransformerKeys = Field(t, "transformer", "keys").GetValue<int>();
        ReferenceTransformerForwardMs = meta["transformer_forward_ms"]?.GetValue<double>();
        VaeConfig = ConfigJson.Parse<AutoencoderKLConfig>(Field(v, "vae", "config").ToJsonString(), source + " vae.config");
        VaeSeed = Field(v, "vae", "seed").GetValue<long>();
        VaeKeys = Field(v, "vae", "keys").GetValue<int>();
        Machine = meta["machine"]?.GetValue<string>();
        TransformerConfig.Validate();
        VaeConfig.Validate();
    }

    /// <summary>Reads meta.json of the fixture in <paramref name="folder"/> and checks that expected.safetensors is there.</summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">A fixture file is missing.</exception>
    /// <exception cref="InvalidDataException">meta.json is malformed.</exception>
    public static FullSizeFixture Open(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"Full-size fixture folder not found: {folder}");
        foreach (var name in new[] { MetaFileName, ExpectedFileName })
            if (!File.Exists(Path.Combine(folder, name)))
                throw new FileNotFoundException($"The full-size fixture folder {folder} has no {name}.", Path.Combine(folder, name));
        string metaPath = Path.Combine(folder, MetaFileName);
        JsonObject meta;
        try
        {
            meta = JsonNode.Parse(File.ReadAllText(metaPath)) as JsonObject ?? throw new InvalidDataException($"{metaPath}: not a JSON object.");
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new InvalidDataException($"{metaPath}: invalid JSON: {e.Message}", e);
        }
        try
        {
            return new FullSizeFixture(folder, meta);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{metaPath}: a field has the wrong type: {e.Message}", e);
        }
    }

    /// <summary>Reads the reference tensor <paramref name="key"/> (e.g. <c>transformer.out</c>) as float32 on the CPU.</summary>
    /// <exception cref="KeyNotFoundException">The fixture has no such tensor.</exception>
    public Tensor Expected(string key)
    {
        using var file = SafetensorsFile.Open(Path.Combine(Folder, ExpectedFileName));
        if (!file.Tensors.ContainsKey(key))
            throw new KeyNotFoundException($"{Path.Combine(Folder, ExpectedFileName)} has no tensor '{key}' (it has {string.Join(", ", file.Tensors.Keys)}).");
        using var stored = file.Read(key, ScalarType.Float32);
        return stored.clone();
    }
}
