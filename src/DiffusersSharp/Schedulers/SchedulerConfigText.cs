using System.Text;
using System.Text.Json.Nodes;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// Reads scheduler configs as diffusers writes them: Python's <c>json.dumps</c> emits bare <c>NaN</c>,
/// <c>Infinity</c> and <c>-Infinity</c> (DPM-Solver's <c>lambda_min_clipped</c>), which are not JSON; they are turned
/// into the strings that <see cref="IO.ConfigJson"/> reads as named floating-point literals.
/// </summary>
public static class SchedulerConfigText
{
    /// <summary>The text of <c>scheduler_config.json</c> in <paramref name="folderOrFile"/> (a folder or the file), made JSON.</summary>
    /// <exception cref="FileNotFoundException">The file is missing.</exception>
    public static string Read(string folderOrFile)
    {
        ArgumentNullException.ThrowIfNull(folderOrFile);
        string path = Directory.Exists(folderOrFile) ? Path.Combine(folderOrFile, "scheduler_config.json") : folderOrFile;
        if (!File.Exists(path)) throw new FileNotFoundException($"Scheduler config not found: {path}", path);
        return Sanitize(File.ReadAllText(path));
    }

    /// <summary>Parses a config (with Python's non-finite literals) as a JSON object.</summary>
    /// <exception cref="InvalidDataException">The text is not a JSON object.</exception>
    public static JsonObject Parse(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        try
        {
            return JsonNode.Parse(Sanitize(json)) as JsonObject
                ?? throw new InvalidDataException("A scheduler config must be a JSON object.");
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new InvalidDataException($"Invalid scheduler config: {e.Message}", e);
        }
    }

    /// <summary>Quotes bare <c>NaN</c> / <c>Infinity</c> / <c>-Infinity</c> tokens outside strings.</summary>
    public static string Sanitize(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        var sb = new StringBuilder(json.Length + 16);
        bool inString = false;
        for (int i = 0; i < json.Length; i++)
        {
            char c = json[i];
            if (inString)
            {
                sb.Append(c);
                if (c == '\\' && i + 1 < json.Length) sb.Append(json[++i]);
                else if (c == '"') inString = false;
                continue;
            }
            if (c == '"') { inString = true; sb.Append(c); continue; }
            string? token = Match(json, i, "-Infinity") ?? Match(json, i, "Infinity") ?? Match(json, i, "NaN");
            if (token is not null)
            {
                sb.Append('"').Append(token).Append('"');
                i += token.Length - 1;
                continue;
            }
            sb.Append(c);
        }
        return sb.ToString();
    }

    private static string? Match(string s, int at, string token) =>
        string.CompareOrdinal(s, at, token, 0, token.Length) == 0 ? token : null;
}
