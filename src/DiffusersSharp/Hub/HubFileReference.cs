using System.Text.RegularExpressions;

namespace DiffusersSharp.Hub;

/// <summary>
/// One file of a Hugging Face hub repo (what <c>hf_hub_download(repo_id, filename, revision=...)</c> names): written
/// <c>hf://org/name/path/in/repo.safetensors</c> (the options' revision) or as the file's page or download address,
/// <c>https://huggingface.co/org/name/blob/REV/path</c> or <c>.../resolve/REV/path</c>.
/// </summary>
/// <param name="RepoId">The repo, <c>org/name</c>.</param>
/// <param name="Path">The file's path in the repo.</param>
/// <param name="Revision">The revision the address names, or null for the options' own.</param>
public sealed partial record HubFileReference(string RepoId, string Path, string? Revision)
{
    /// <summary>Reads <paramref name="text"/> as a hub file reference; false for anything else (a local path).</summary>
    public static bool TryParse(string? text, out HubFileReference? reference)
    {
        reference = null;
        if (text is null) return false;
        var m = SchemeRegex().Match(text);
        if (!m.Success) m = UrlRegex().Match(text);
        if (!m.Success) return false;
        string repo = m.Groups["repo"].Value, path = Uri.UnescapeDataString(m.Groups["path"].Value);
        string? revision = m.Groups["rev"].Success ? Uri.UnescapeDataString(m.Groups["rev"].Value) : null;
        // No ':' in paths, so that a suffix such as textual inversion's FILE:TOKEN stays apart.
        if (!ModelSource.IsRepoId(repo) || path.Contains(':') || path.Split('/').Any(part => part is "" or "." or "..")) return false;
        reference = new HubFileReference(repo, path, revision);
        return true;
    }

    /// <inheritdoc />
    public override string ToString() => $"hf://{RepoId}/{Path}" + (Revision is null ? "" : $" (revision {Revision})");

    [GeneratedRegex(@"^hf://(?<repo>[^/]+/[^/]+)/(?<path>[^?#]+)$")]
    private static partial Regex SchemeRegex();

    [GeneratedRegex(@"^https://huggingface\.co/(?<repo>[^/]+/[^/]+)/(?:blob|resolve)/(?<rev>[^/]+)/(?<path>[^?#]+)(?:\?[^#]*)?$")]
    private static partial Regex UrlRegex();
}
