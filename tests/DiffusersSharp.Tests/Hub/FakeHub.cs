using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Hub;

/// <summary>One repo the fake hub serves.</summary>
/// <param name="Files">Repo path ('/' separators) to content.</param>
/// <param name="Commit">Its head commit hash.</param>
/// <param name="Gated">Whether only <see cref="FakeHub.GrantedToken"/> may read it.</param>
internal sealed record FakeRepo(IReadOnlyDictionary<string, byte[]> Files, string Commit, bool Gated = false);

/// <summary>A request either server saw.</summary>
internal sealed record LoggedRequest(string Server, string Method, string Path, string? Authorization, string? Range);

/// <summary>
/// A stand-in for huggingface.co on 127.0.0.1: the revision API, <c>resolve</c> with <c>X-Repo-Commit</c>/<c>ETag</c>
/// (git sha1 for regular files), LFS files (*.safetensors) answered by a 302 with <c>X-Linked-Etag</c> (sha256) and
/// <c>X-Linked-Size</c> to a second server (the "CDN", another port so another origin) that honours <c>Range</c>;
/// gated repos (listing public, files not) and the hub's error headers. Faults: drop a blob's connection midway once, or serve wrong bytes.
/// </summary>
internal sealed class FakeHub : IAsyncDisposable
{
    public const string GrantedToken = "hf_granted_token_0123";
    public const string NotGrantedToken = "hf_not_granted_token_4567";
    public const string Commit = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567";

    private readonly Dictionary<string, FakeRepo> _repos;
    private readonly Dictionary<string, byte[]> _lfs = new(StringComparer.Ordinal);
    private readonly MiniHttpServer _hub;
    private readonly MiniHttpServer _cdn;

    public FakeHub(Dictionary<string, FakeRepo> repos)
    {
        _repos = repos;
        foreach (var repo in repos.Values)
            foreach (var (path, content) in repo.Files)
                if (IsLfs(path)) _lfs[Sha256(content)] = content;
        _hub = new MiniHttpServer(HandleHub);
        _cdn = new MiniHttpServer(HandleCdn);
    }

    public string Endpoint => _hub.BaseUrl;

    public ConcurrentQueue<LoggedRequest> Requests { get; } = new();

    /// <summary>sha256 of a blob whose next transfer stops after this many bytes (once).</summary>
    public ConcurrentDictionary<string, int> DropOnce { get; } = new();

    /// <summary>sha256s of blobs served with wrong bytes (same length).</summary>
    public ConcurrentDictionary<string, bool> Corrupt { get; } = new();

    public static bool IsLfs(string path) => path.EndsWith(".safetensors", StringComparison.Ordinal);

    public static string Sha256(byte[] content) => Convert.ToHexStringLower(SHA256.HashData(content));

    /// <summary>Git's blob id, which the hub sends as the ETag of regular files.</summary>
    public static string GitSha1(byte[] content)
    {
        byte[] header = Encoding.ASCII.GetBytes($"blob {content.Length}\0");
        return Convert.ToHexStringLower(SHA1.HashData([.. header, .. content]));
    }

    /// <summary>The etag huggingface_hub names the blob after.</summary>
    public static string BlobName(string path, byte[] content) => IsLfs(path) ? Sha256(content) : GitSha1(content);

    /// <summary>The tiny SD3 pipeline fixture, by repo path.</summary>
    public static Dictionary<string, byte[]> TinySd3Files()
    {
        string root = Fixtures.TinySd3Model;
        return Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories)
            .ToDictionary(f => Path.GetRelativePath(root, f).Replace('\\', '/'), File.ReadAllBytes, StringComparer.Ordinal);
    }

    private MiniResponse HandleHub(MiniRequest request)
    {
        string? auth = request.Header("Authorization");
        Requests.Enqueue(new LoggedRequest("hub", request.Method, request.Path, auth, request.Header("Range")));
        string path = Uri.UnescapeDataString(request.Path.Split('?')[0]);
        bool api = path.StartsWith("/api/models/", StringComparison.Ordinal);
        var parts = (api ? path["/api/models/".Length..] : path.TrimStart('/')).Split('/', 5);
        // api: org/name/revision/<rev>; files: org/name/resolve/<rev>/<path>
        if (parts.Length < 4 || parts[2] != (api ? "revision" : "resolve") || (!api && parts.Length < 5))
            return MiniResponse.Text(404, "Not Found");
        string repoId = parts[0] + "/" + parts[1];
        string? token = auth is not null && auth.StartsWith("Bearer ", StringComparison.Ordinal) ? auth["Bearer ".Length..] : null;
        if (token is not null && token is not (GrantedToken or NotGrantedToken))
            return Error(401, null, "Invalid credentials in Authorization header");
        if (!_repos.TryGetValue(repoId, out var repo))
            return Error(401, "RepoNotFound", "Repository not found");
        // as on huggingface.co, a gated repo's file list is public; its files are not
        if (repo.Gated && !api && token != GrantedToken)
            return token is null
                ? Error(401, "GatedRepo", $"Access to model {repoId} is restricted. You must have access to it and be authenticated to access it. Please log in.")
                : Error(403, "GatedRepo", $"Access to model {repoId} is restricted and you are not in the authorized list. Visit https://huggingface.co/{repoId} to ask for access.");
        string revision = parts[3];
        if (revision != "main" && revision != repo.Commit)
            return Error(404, "RevisionNotFound", "Invalid rev id: " + revision);
        if (api)
        {
            var listing = new { id = repoId, sha = repo.Commit, siblings = repo.Files.Keys.Select(f => new { rfilename = f }) };
            return MiniResponse.Text(200, JsonSerializer.Serialize(listing), new Dictionary<string, string> { ["Content-Type"] = "application/json" });
        }
        string file = parts[4];
        if (!repo.Files.TryGetValue(file, out var content))
            return Error(404, "EntryNotFound", $"{file} does not exist on \"{revision}\"");
        var headers = new Dictionary<string, string> { ["X-Repo-Commit"] = repo.Commit, ["ETag"] = $"\"{GitSha1(content)}\"" };
        if (!IsLfs(file)) return new MiniResponse(200, headers, content);
        string sha = Sha256(content);
        headers["X-Linked-Etag"] = $"\"{sha}\"";
        headers["X-Linked-Size"] = content.Length.ToString();
        headers["Location"] = $"{_cdn.BaseUrl}/lfs/{sha}?signature=test";
        return new MiniResponse(302, headers, []);
    }

    private MiniResponse HandleCdn(MiniRequest request)
    {
        string? range = request.Header("Range");
        Requests.Enqueue(new LoggedRequest("cdn", request.Method, request.Path, request.Header("Authorization"), range));
        string path = request.Path.Split('?')[0];
        if (!path.StartsWith("/lfs/", StringComparison.Ordinal) || !_lfs.TryGetValue(path["/lfs/".Length..], out var content))
            return MiniResponse.Text(404, "no such object");
        string sha = path["/lfs/".Length..];
        if (Corrupt.ContainsKey(sha)) content = content.Select(b => (byte)(b ^ 0x5A)).ToArray();
        int start = 0;
        if (range is not null && range.StartsWith("bytes=", StringComparison.Ordinal) && range.EndsWith('-'))
            start = int.Parse(range["bytes=".Length..^1]);
        if (start > content.Length) return MiniResponse.Text(416, "");
        var headers = new Dictionary<string, string> { ["ETag"] = $"\"{sha}\"", ["Accept-Ranges"] = "bytes" };
        if (start > 0) headers["Content-Range"] = $"bytes {start}-{content.Length - 1}/{content.Length}";
        int? drop = DropOnce.TryRemove(sha, out int after) ? after : null;
        return new MiniResponse(start > 0 ? 206 : 200, headers, content[start..], drop);
    }

    private static MiniResponse Error(int status, string? code, string message)
    {
        var headers = new Dictionary<string, string> { ["X-Error-Message"] = message, ["Content-Type"] = "application/json" };
        if (code is not null) headers["X-Error-Code"] = code;
        return MiniResponse.Text(status, JsonSerializer.Serialize(new { error = message }), headers);
    }

    public async ValueTask DisposeAsync()
    {
        await _hub.DisposeAsync();
        await _cdn.DisposeAsync();
    }
}
