using System.Text.Json;

namespace DiffusersSharp.IO;

/// <summary>One entry of <c>model_index.json</c>: the library and class of a pipeline component (both null when unset).</summary>
/// <param name="Library">"diffusers" or "transformers", or null.</param>
/// <param name="ClassName">The component's class name, or null for an empty slot (e.g. <c>image_encoder: [null, null]</c>).</param>
public sealed record ComponentSpec(string? Library, string? ClassName)
{
    /// <summary>Whether the slot is empty.</summary>
    public bool IsEmpty => ClassName is null;
}

/// <summary>A pipeline folder's <c>model_index.json</c>: the pipeline class and its components.</summary>
public sealed record ModelIndex(string ClassName, string? DiffusersVersion, IReadOnlyDictionary<string, ComponentSpec> Components)
{
    /// <summary>Reads <c>model_index.json</c> from a pipeline folder (or the file itself).</summary>
    public static ModelIndex Read(string pathOrFolder)
    {
        string path = Directory.Exists(pathOrFolder) ? Path.Combine(pathOrFolder, "model_index.json") : pathOrFolder;
        if (!File.Exists(path)) throw new FileNotFoundException($"No model_index.json in {Path.GetDirectoryName(path)}: not a diffusers pipeline folder.", path);
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not valid JSON: {e.Message}"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("_class_name", out var cls) || cls.ValueKind != JsonValueKind.String)
                throw new InvalidDataException($"{path}: needs a \"_class_name\" string.");
            string? version = root.TryGetProperty("_diffusers_version", out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
            var components = new Dictionary<string, ComponentSpec>(StringComparer.Ordinal);
            foreach (var p in root.EnumerateObject())
            {
                if (p.Name.StartsWith('_')) continue;
                if (p.Value.ValueKind != JsonValueKind.Array) continue; // plain options such as "requires_safety_checker"
                if (p.Value.GetArrayLength() != 2)
                    throw new InvalidDataException($"{path}: component '{p.Name}' must be [library, class].");
                string? Text(JsonElement e) => e.ValueKind == JsonValueKind.String ? e.GetString() : e.ValueKind == JsonValueKind.Null ? null
                    : throw new InvalidDataException($"{path}: component '{p.Name}' must hold strings or nulls.");
                components[p.Name] = new ComponentSpec(Text(p.Value[0]), Text(p.Value[1]));
            }
            return new ModelIndex(cls.GetString()!, version, components);
        }
    }
}
