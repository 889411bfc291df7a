using System.Text.RegularExpressions;

namespace DiffusersSharp.Cli.Web;

/// <summary>Messages of the shared option checks, worded for the web UI's fields.</summary>
internal static partial class WebText
{
    /// <summary>"--steps must be at least 1" becomes "steps must be at least 1" (the JSON field names use '_' for '-').</summary>
    public static string WithoutDashes(string message) => OptionName().Replace(message, m => m.Groups[1].Value.Replace('-', '_'));

    [GeneratedRegex(@"(?<![\w-])--([a-z0-9]+(?:-[a-z0-9]+)*)")]
    private static partial Regex OptionName();
}
