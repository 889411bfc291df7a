using System.Text.Json;
using static TorchSharp.torch;

namespace DiffusersSharp.IO;

/// <summary>
/// The safetensors weights of one model folder: a single file, a sharded set with its <c>*.safetensors.index.json</c>,
/// or a variant of either (<c>model.fp16.safetensors</c>, <c>diffusion_pytorch_model.fp16.safetensors</c>). All headers
/// are validated on open; data is read only when asked for.
/// </summary>
public sealed class WeightFiles : IDisposable
{
    /// <summary>Weight file stems diffusers (models) and transformers (text encoders) use.</summary>
    public static readonly string[] Stems = ["diffusion_pytorch_model", "model"];

    private readonly List<SafetensorsFile> _files;
    private readonly Dictionary<string, SafetensorsFile> _byKey;

    /// <summary>The files, in the order they were opened.</summary>
    public IReadOnlyList<SafetensorsFile> Files => _files;

    /// <summary>Every tensor of every file, by key.</summary>
    public IReadOnlyDictionary<string, SafetensorsTensorInfo> Tensors { get; }

    private WeightFiles(List<SafetensorsFile> files)
    {
        _files = files;
        _byKey = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        var tensors = new Dictionary<string, SafetensorsTensorInfo>(StringComparer.Ordinal);
        foreach (var f in files)
            foreach (var (key, info) in f.Tensors)
            {
                if (!_byKey.TryAdd(key, f))
                    throw new SafetensorsFormatException(
                        $"tensor '{key}' is in both {Path.GetFileName(_byKey[key].Header.Path)} and {Path.GetFileName(f.Header.Path)}.");
                tensors[key] = info;
            }
        Tensors = tensors;
    }

    /// <summary>Opens explicit safetensors files as one set.</summary>
    public static WeightFiles Open(IEnumerable<string> paths)
    {
        var files = new List<SafetensorsFile>();
        try
        {
            foreach (var p in paths) files.Add(SafetensorsFile.Open(p));
            return new WeightFiles(files);
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Finds and opens the weights of a model folder, or returns null when it holds none.
    /// With a <paramref name="variant"/> (e.g. "fp16") only that variant's files are accepted.
    /// </summary>
    /// <exception cref="FileNotFoundException">A variant was asked for and is absent, or an index names a missing shard.</exception>
    public static WeightFiles? TryOpen(string folder, string? variant = null)
    {
        var paths = FindFiles(folder, variant);
        return paths is null ? null : Open(paths);
    }

    /// <summary>The weight files of a folder without opening them (null when there are none).</summary>
    public static IReadOnlyList<string>? FindFiles(string folder, string? variant = null)
    {
        var found = FindExact(folder, variant);
        if (found is null && variant is not null && FindExact(folder, null) is not null)
            throw new FileNotFoundException($"{folder} has weights, but not the '{variant}' variant.");
        return found;
    }

    /// <summary>The files of exactly this variant (or of the default weights when null), or null.</summary>
    internal static IReadOnlyList<string>? FindExact(string folder, string? variant)
    {
        foreach (var stem in Stems)
        {
            string single = Path.Combine(folder, variant is null ? $"{stem}.safetensors" : $"{stem}.{variant}.safetensors");
            if (File.Exists(single)) return [single];
            string[] indexNames = variant is null
                ? [$"{stem}.safetensors.index.json"]
                : [$"{stem}.safetensors.index.{variant}.json", $"{stem}.{variant}.safetensors.index.json"];
            foreach (var indexName in indexNames)
            {
                string index = Path.Combine(folder, indexName);
                if (File.Exists(index)) return ShardsOf(index);
            }
        }
        return null;
    }

    private static List<string> ShardsOf(string indexPath)
    {
        string folder = Path.GetDirectoryName(indexPath)!;
        using var doc = ReadJson(indexPath);
        if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{Path.GetFileName(indexPath)} has no weight_map object.");
        var shards = new List<string>();
        foreach (var entry in map.EnumerateObject())
        {
            string? file = entry.Value.GetString();
            if (string.IsNullOrEmpty(file) || file.Contains('/') || file.Contains('\\') || file.Contains(".."))
                throw new InvalidDataException($"{Path.GetFileName(indexPath)} maps '{entry.Name}' to an invalid file name '{file}'.");
            string path = Path.Combine(folder, file);
            if (!shards.Contains(path)) shards.Add(path);
        }
        foreach (var s in shards)
            if (!File.Exists(s)) throw new FileNotFoundException($"{Path.GetFileName(indexPath)} names shard {Path.GetFileName(s)}, which is missing.", s);
        return shards;
    }

    private static JsonDocument ReadJson(string path)
    {
        try { return JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e) { throw new InvalidDataException($"{Path.GetFileName(path)} is not valid JSON: {e.Message}"); }
    }

    /// <summary>Reads one tensor (see <see cref="SafetensorsFile.Read"/>).</summary>
    public Tensor Read(string key, ScalarType? dtype = null, Device? device = null) =>
        _byKey.TryGetValue(key, out var f) ? f.Read(key, dtype, device) : throw new KeyNotFoundException($"no tensor '{key}' in the weights.");

    /// <summary>Closes every file.</summary>
    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
