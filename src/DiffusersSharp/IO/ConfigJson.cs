using System.Text.Json;
using System.Text.Json.Serialization;

namespace DiffusersSharp.IO;

/// <summary>
/// Reads diffusers / transformers JSON configs (<c>config.json</c>, <c>scheduler_config.json</c>) into typed records.
/// Field names are the Python ones (snake_case, mapped with <see cref="JsonPropertyNameAttribute"/> where they differ
/// from the snake-case of the C# name); fields the record does not know are ignored, as the Python loaders do; absent
/// fields keep the record's defaults, which equal the Python constructor defaults.
/// </summary>
public static class ConfigJson
{
    /// <summary>Serializer options shared by every config record.</summary>
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals | JsonNumberHandling.AllowReadingFromString,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    /// <summary>Reads <paramref name="path"/> as <typeparamref name="T"/>.</summary>
    /// <exception cref="FileNotFoundException">The file is missing.</exception>
    /// <exception cref="InvalidDataException">The file is not valid JSON or a field has the wrong type.</exception>
    public static T Read<T>(string path) where T : class
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Config file not found: {path}", path);
        return Parse<T>(File.ReadAllText(path), path);
    }

    /// <summary>Parses JSON text as <typeparamref name="T"/>; <paramref name="source"/> names it in errors.</summary>
    public static T Parse<T>(string json, string source = "config") where T : class
    {
        try
        {
            return JsonSerializer.Deserialize<T>(json, Options) ?? throw new InvalidDataException($"{source}: config is null.");
        }
        catch (JsonException e)
        {
            string where = e.Path is null ? "" : $" at {e.Path}";
            throw new InvalidDataException($"{source}: invalid config{where}: {e.Message}", e);
        }
    }

    /// <summary>Writes a config record as JSON, atomically.</summary>
    public static void Write<T>(string path, T config) =>
        AtomicFile.WriteAllBytes(path, JsonSerializer.SerializeToUtf8Bytes(config, Options));
}
