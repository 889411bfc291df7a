using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace DiffusersSharp.Loaders;

/// <summary>
/// The PEFT <c>LoraConfig</c> that diffusers' <c>save_lora_weights(..., *_lora_adapter_metadata=...)</c> stores in the
/// safetensors <c>__metadata__</c> under <c>lora_adapter_metadata</c> (JSON, keys prefixed with the component:
/// <c>unet.lora_alpha</c>, <c>unet.alpha_pattern</c>, ...). diffusers builds the adapter from it instead of assuming
/// <c>alpha = r</c>; only the entries that change the fused weights are read here.
/// </summary>
internal sealed class LoraAdapterMetadata
{
    private const string Key = "lora_adapter_metadata";
    private readonly JsonObject _json;

    private LoraAdapterMetadata(JsonObject json) => _json = json;

    /// <summary>The file's adapter metadata, or null when it has none.</summary>
    /// <exception cref="InvalidDataException">The metadata is not a JSON object.</exception>
    public static LoraAdapterMetadata? Read(string path, IReadOnlyDictionary<string, string> metadata)
    {
        if (!metadata.TryGetValue(Key, out var text)) return null;
        try
        {
            return JsonNode.Parse(text) is JsonObject json ? new LoraAdapterMetadata(json)
                : throw new InvalidDataException($"{path}: __metadata__.{Key} is not a JSON object.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: __metadata__.{Key} is not valid JSON ({e.Message}).", e);
        }
    }

    /// <summary>
    /// PEFT's scaling for <paramref name="module"/> of <paramref name="component"/>: <c>lora_alpha / r</c>
    /// (<c>/ sqrt(r)</c> with <c>use_rslora</c>), the alpha taken from the first <c>alpha_pattern</c> entry that matches
    /// the module path as PEFT's <c>get_pattern_key</c> does, else <c>lora_alpha</c>; null when the metadata has no alpha
    /// for this component.
    /// </summary>
    /// <exception cref="InvalidDataException">The metadata asks for DoRA, which needs weights this format does not carry.</exception>
    public double? Scaling(string path, string component, string module, long rank)
    {
        if (Bool(component, "use_dora"))
            throw new InvalidDataException($"{path}: the {component} adapter metadata sets use_dora; DoRA LoRAs are not supported.");
        double? alpha = Number(_json[$"{component}.lora_alpha"]);
        if (_json[$"{component}.alpha_pattern"] is JsonObject patterns)
        {
            foreach (var (pattern, value) in patterns)
            {
                if (Matches(path, module, pattern))
                {
                    alpha = Number(value);
                    break;
                }
            }
        }
        if (alpha is null) return null;
        return alpha.Value / (Bool(component, "use_rslora") ? Math.Sqrt(rank) : rank);
    }

    // PEFT's get_pattern_key: the pattern is a regex that must match the end of the module path at a '.' boundary.
    private static bool Matches(string path, string module, string pattern)
    {
        try
        {
            return Regex.IsMatch(module, $"^(.*\\.)?({pattern})$", RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{path}: alpha_pattern key '{pattern}' is not a valid regular expression ({e.Message}).", e);
        }
    }

    private bool Bool(string component, string name) =>
        _json[$"{component}.{name}"] is JsonValue v && v.TryGetValue<bool>(out var b) && b;

    private static double? Number(JsonNode? node) =>
        node is JsonValue v && v.TryGetValue<double>(out var d) ? d : null;
}
