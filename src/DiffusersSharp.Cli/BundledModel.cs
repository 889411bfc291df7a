namespace DiffusersSharp.Cli;

/// <summary>
/// The shapes model shipped in the repository (<c>models/shapes-sd3</c>), used when a command gets no <c>--model</c>.
/// It is found next to the executable (the build copies it there), else in the current folder or one above it.
/// </summary>
public static class BundledModel
{
    /// <summary>The folder, relative to the repository root and to the executable.</summary>
    public const string RelativePath = "models/shapes-sd3";

    /// <summary>The bundled model folder, or null when it is nowhere to be found.</summary>
    public static string? Find()
    {
        var starts = new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() };
        foreach (var start in starts)
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, RelativePath);
                if (File.Exists(Path.Combine(candidate, "model_index.json"))) return candidate;
            }
        return null;
    }
}
