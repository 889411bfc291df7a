using System.Text.Json;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// What transformers' config files say about the rotary embedding, read the same way for every decoder text encoder:
/// the base (<c>rope_parameters.rope_theta</c> in transformers 5's files, else <c>rope_theta</c>) and the check that
/// only the default rope is asked for.
/// </summary>
internal static class HfRope
{
    /// <summary>The rotary base in effect: <c>rope_parameters.rope_theta</c> when the file has it, else <paramref name="ropeTheta"/>.</summary>
    public static double Theta(JsonElement? ropeParameters, double ropeTheta) =>
        ropeParameters is { ValueKind: JsonValueKind.Object } p && p.TryGetProperty("rope_theta", out var t) && t.ValueKind == JsonValueKind.Number
            ? t.GetDouble()
            : ropeTheta;

    /// <summary>Throws unless the base is a positive number and <c>rope_scaling</c> / <c>rope_parameters</c> ask for the
    /// default rope (or nothing).</summary>
    /// <exception cref="ArgumentException">The base is not positive, or a field is neither an object nor null.</exception>
    /// <exception cref="NotSupportedException">Another rope type.</exception>
    public static void RequireDefault(string config, double theta, JsonElement? ropeScaling, JsonElement? ropeParameters)
    {
        if (!(theta > 0) || double.IsInfinity(theta))
            throw new ArgumentException($"{config}: rope_theta must be a positive number, got {theta}.");
        foreach (var (field, value) in new[] { ("rope_scaling", ropeScaling), ("rope_parameters", ropeParameters) })
        {
            if (value is not { } v || v.ValueKind == JsonValueKind.Null) continue;
            if (v.ValueKind != JsonValueKind.Object) throw new ArgumentException($"{config}: {field} must be an object or null.");
            string? kind = v.TryGetProperty("rope_type", out var rt) ? rt.GetString() : v.TryGetProperty("type", out var ty) ? ty.GetString() : null;
            if (kind is not (null or "default"))
                throw new NotSupportedException($"{config}: {field} rope_type '{kind}' is not supported by DiffusersSharp (only the default rotary embedding is implemented).");
        }
    }
}
