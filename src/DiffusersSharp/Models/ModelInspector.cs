using System.Text.Json;
using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using static TorchSharp.torch;

namespace DiffusersSharp.Models;

/// <summary>Size and type of one component, read from safetensors headers or, without weights, from its config.</summary>
/// <param name="Name">Component name (model_index.json key), or the folder/file name.</param>
/// <param name="Library">"diffusers" or "transformers" when known.</param>
/// <param name="ClassName">The component class.</param>
/// <param name="Kind">Model, tokenizer, scheduler or image processor.</param>
/// <param name="Source">"safetensors" (counted from headers), "config" (built on the meta device) or "files".</param>
/// <param name="Dtypes">Stored dtypes of the weights (from headers); the config's torch_dtype when counted from a config.</param>
/// <param name="Tensors">Number of tensors (state_dict keys).</param>
/// <param name="Elements">Number of elements (parameters and persistent buffers).</param>
/// <param name="Files">Weight or tokenizer files found.</param>
/// <param name="Config">The component's config JSON, if any.</param>
public sealed record ComponentInfo(string Name, string? Library, string? ClassName, ComponentKind Kind, string Source,
    IReadOnlyList<string> Dtypes, long? Tensors, long? Elements, IReadOnlyList<string> Files, JsonNode? Config);

/// <summary>What <c>diffusers info</c> reports: the pipeline class and its components.</summary>
public sealed record ModelInfo(string Path, string? PipelineClass, IReadOnlyList<ComponentInfo> Components);

/// <summary>Describes a model folder, component folder or safetensors file without loading any weights.</summary>
public static class ModelInspector
{
    /// <summary>Inspects <paramref name="path"/>: a pipeline folder (model_index.json), a component folder, or a .safetensors file.</summary>
    public static ModelInfo Inspect(string path)
    {
        if (File.Exists(path))
        {
            if (!path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
                throw new InvalidDataException($"{path}: expected a model folder or a .safetensors file.");
            return new ModelInfo(path, null, [FromHeaders(System.IO.Path.GetFileName(path), null, null, [path], null)]);
        }
        if (!Directory.Exists(path)) throw new DirectoryNotFoundException($"Model not found: {path} is neither a folder nor a file.");
        if (File.Exists(System.IO.Path.Combine(path, "model_index.json")))
        {
            var index = ModelIndex.Read(path);
            var components = new List<ComponentInfo>();
            foreach (var (name, spec) in index.Components.OrderBy(c => c.Key, StringComparer.Ordinal))
            {
                // Optional components DiffusersSharp never loads (the safety checker...) are left out, as downloads leave them.
                if (spec.IsEmpty || Hub.HubFileSelector.IsUnused(name, index.ClassName)) continue;
                components.Add(Component(name, spec.Library, spec.ClassName!, System.IO.Path.Combine(path, name)));
            }
            return new ModelInfo(path, index.ClassName, components);
        }
        string? cls = ReadClassName(path);
        if (cls is null) throw new InvalidDataException($"{path}: no model_index.json, config.json or scheduler_config.json with a class name.");
        return new ModelInfo(path, null, [Component(System.IO.Path.GetFileName(System.IO.Path.TrimEndingDirectorySeparator(path)), null, cls, path)]);
    }

    private static ComponentInfo Component(string name, string? library, string className, string folder)
    {
        var kind = ModelRegistry.KindOf(name, className);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"Component '{name}' ({className}): folder {folder} is missing.");
        var config = ReadConfig(folder);
        if (kind != ComponentKind.Model)
        {
            var files = Directory.GetFiles(folder).Select(System.IO.Path.GetFileName).Order(StringComparer.Ordinal).ToList();
            return new ComponentInfo(name, library, className, kind, "files", [], null, null, files!, config);
        }
        var weightFiles = WeightFiles.FindFiles(folder);
        if (weightFiles is not null) return FromHeaders(name, library, className, weightFiles, config);
        if (config is null) throw new FileNotFoundException($"Component '{name}' ({className}) has neither weights nor config.json in {folder}.");
        using var model = ModelRegistry.Build(name, className, folder, new Device("meta"));
        var state = model.state_dict();
        string dtype = config["torch_dtype"]?.GetValue<string>() ?? "float32";
        return new ComponentInfo(name, library, className, kind, "config", [dtype], state.Count,
            state.Values.Sum(t => t.numel()), [], config);
    }

    private static ComponentInfo FromHeaders(string name, string? library, string? className, IReadOnlyList<string> files, JsonNode? config)
    {
        var headers = files.Select(SafetensorsHeader.Read).ToList();
        var tensors = headers.SelectMany(h => h.Tensors.Values).ToList();
        return new ComponentInfo(name, library, className, ComponentKind.Model, "safetensors",
            tensors.Select(t => t.Dtype.ToString()).Distinct().Order(StringComparer.Ordinal).ToList(),
            tensors.Count, tensors.Sum(t => t.ElementCount), files.Select(System.IO.Path.GetFileName).ToList()!, config);
    }

    private static JsonNode? ReadConfig(string folder)
    {
        foreach (var file in new[] { "config.json", "scheduler_config.json", "tokenizer_config.json", "preprocessor_config.json" })
        {
            string p = System.IO.Path.Combine(folder, file);
            if (!File.Exists(p)) continue;
            try { return JsonNode.Parse(File.ReadAllText(p)); }
            catch (JsonException e) { throw new InvalidDataException($"{p}: not valid JSON: {e.Message}"); }
        }
        return null;
    }

    private static string? ReadClassName(string folder)
    {
        var config = ReadConfig(folder);
        if (config is null) return null;
        string? cls = config["_class_name"]?.GetValue<string>();
        if (cls is not null) return cls;
        return config["architectures"] is JsonArray { Count: > 0 } a ? a[0]?.GetValue<string>()
            : config["tokenizer_class"]?.GetValue<string>() ?? config["image_processor_type"]?.GetValue<string>();
    }
}
