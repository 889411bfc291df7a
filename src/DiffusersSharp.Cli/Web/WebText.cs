using System.Text.Json;
using System.Text.RegularExpressions;

namespace DiffusersSharp.Cli.Web;

/// <summary>Messages of the shared option checks, worded for the web UI's fields.</summary>
internal static partial class WebText
{
    /// <summary>"--steps must be at least 1" becomes "steps must be at least 1" (the JSON field names use '_' for '-').</summary>
    public static string WithoutDashes(string message) => OptionName().Replace(message, m => m.Groups[1].Value.Replace('-', '_'));

    /// <summary>
    /// A body that does not bind, named by its field and the kind of value it takes ("seed must be a whole number from
    /// -2^63 to 2^63 - 1"), not by .NET's type names ("could not be converted to System.Nullable`1[System.Int64]").
    /// </summary>
    public static string JsonError(JsonException e)
    {
        string? field = e.Path is { Length: > 2 } path && path.StartsWith("$.", StringComparison.Ordinal) ? path[2..] : null;
        var property = field is null ? null : typeof(WebGenerateRequest).GetProperties()
            .FirstOrDefault(p => JsonNamingPolicy.SnakeCaseLower.ConvertName(p.Name) == field);
        if (property is null)
            return field is null ? "The request body is not valid JSON for this API." : $"{field} is not an option of this API (or its value is invalid).";
        var type = Nullable.GetUnderlyingType(property.PropertyType) ?? property.PropertyType;
        string kind = field == "control_mode" ? "a control type (a name such as canny, or an index) or a list of them"
            : type == typeof(int) ? "a whole number from -2^31 to 2^31 - 1"
            : type == typeof(long) ? "a whole number from -2^63 to 2^63 - 1"
            : type == typeof(double) ? "a number"
            : type == typeof(bool) ? "true or false"
            : type == typeof(string) ? "a string"
            : type == typeof(string[]) ? "a list of strings"
            : type == typeof(double[]) ? "a number or a list of numbers"
            : "a value of another kind";
        return $"{field} must be {kind}.";
    }

    [GeneratedRegex(@"(?<![\w-])--([a-z0-9]+(?:-[a-z0-9]+)*)")]
    private static partial Regex OptionName();
}
