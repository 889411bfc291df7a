using System.Text.RegularExpressions;

namespace DiffusersSharp.Hub;

/// <summary>
/// The huggingface_hub cache layout of one model repo: <c>models--org--name/blobs/&lt;etag&gt;</c> holds file contents,
/// <c>snapshots/&lt;commit&gt;/&lt;path&gt;</c> are relative symlinks to blobs, <c>refs/&lt;revision&gt;</c> holds a commit hash.
/// </summary>
public sealed partial class HubCache
{
    /// <summary>The cache for <paramref name="repoId"/> under the hub cache folder <paramref name="cacheDir"/>.</summary>
    public HubCache(string cacheDir, string repoId)
    {
        RepoId = repoId;
        RepoFolder = Path.Combine(Path.GetFullPath(cacheDir), "models--" + repoId.Replace("/", "--", StringComparison.Ordinal));
    }

    /// <summary>The repo id (<c>org/name</c>).</summary>
    public string RepoId { get; }

    /// <summary><c>&lt;cache&gt;/models--org--name</c>.</summary>
    public string RepoFolder { get; }

    /// <summary>Whether <paramref name="revision"/> is a full commit hash.</summary>
    public static bool IsCommitHash(string revision) => CommitRegex().IsMatch(revision);

    /// <summary>Path of the blob with this (normalized) etag.</summary>
    public string BlobPath(string etag) => Path.Combine(RepoFolder, "blobs", etag);

    /// <summary>The snapshot folder of a commit.</summary>
    public string SnapshotFolder(string commit) => Path.Combine(RepoFolder, "snapshots", commit);

    /// <summary>The snapshot entry of a repo file (with '/' separators) at a commit.</summary>
    public string PointerPath(string commit, string repoFile) => Path.Combine(SnapshotFolder(commit), repoFile.Replace('/', Path.DirectorySeparatorChar));

    /// <summary>The commit a revision points to in the cache, or null (a commit hash is its own answer).</summary>
    public string? ReadRef(string revision)
    {
        if (IsCommitHash(revision)) return revision;
        string path = RefPath(revision);
        if (!File.Exists(path)) return null;
        string commit = File.ReadAllText(path).Trim();
        return IsCommitHash(commit) ? commit : null;
    }

    /// <summary>Records that <paramref name="revision"/> points to <paramref name="commit"/> (nothing for a commit hash).</summary>
    public void WriteRef(string revision, string commit)
    {
        if (IsCommitHash(revision) || ReadRef(revision) == commit) return;
        IO.AtomicFile.WriteAllBytes(RefPath(revision), System.Text.Encoding.UTF8.GetBytes(commit));
    }

    /// <summary>
    /// Points the snapshot entry of <paramref name="repoFile"/> to a complete blob with a relative symlink (as
    /// huggingface_hub does), or, where symlinks are not allowed, to a copy of it.
    /// </summary>
    public void LinkSnapshotFile(string commit, string repoFile, string blobPath)
    {
        string pointer = PointerPath(commit, repoFile);
        string dir = Path.GetDirectoryName(pointer)!;
        Directory.CreateDirectory(dir);
        if (File.Exists(pointer) || IsLink(pointer)) File.Delete(pointer);
        try
        {
            File.CreateSymbolicLink(pointer, Path.GetRelativePath(dir, blobPath));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            IO.AtomicFile.Write(pointer, s => { using var src = File.OpenRead(blobPath); src.CopyTo(s); });
        }
    }

    /// <summary>
    /// Takes the exclusive lock huggingface_hub takes before writing a blob (<c>&lt;cache&gt;/.locks/models--org--name/&lt;etag&gt;.lock</c>,
    /// an flock on Unix), waiting while another process holds it. Dispose the result to release it.
    /// </summary>
    public async Task<IDisposable> LockBlobAsync(string etag, CancellationToken ct)
    {
        string path = Path.Combine(Path.GetDirectoryName(RepoFolder)!, ".locks", Path.GetFileName(RepoFolder), etag + ".lock");
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException)
            {
                await Task.Delay(100, ct).ConfigureAwait(false); // held by another download of the same blob
            }
        }
    }

    private static bool IsLink(string path)
    {
        var info = new FileInfo(path);
        return info.LinkTarget is not null;
    }

    private string RefPath(string revision)
    {
        if (revision.Split('/').Any(part => part is "" or "." or ".."))
            throw new HubException(HubErrorKind.RevisionNotFound, $"'{revision}' is not a valid revision name.");
        return Path.Combine(RepoFolder, "refs", revision.Replace('/', Path.DirectorySeparatorChar));
    }

    [GeneratedRegex("^[0-9a-f]{40}$")]
    private static partial Regex CommitRegex();
}
