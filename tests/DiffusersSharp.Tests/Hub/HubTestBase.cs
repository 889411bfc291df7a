using DiffusersSharp.Hub;

namespace DiffusersSharp.Tests.Hub;

/// <summary>A fresh cache folder per test, removed afterwards, and options that ignore the machine's HF_* variables.</summary>
public abstract class HubTestBase : IDisposable
{
    internal const string PublicRepo = "test-org/tiny-sd3";
    internal const string GatedRepo = "test-org/gated-sd3";

    private static readonly Lazy<Dictionary<string, byte[]>> TinyFiles = new(FakeHub.TinySd3Files);

    protected HubTestBase()
    {
        CacheDir = Path.Combine(Path.GetTempPath(), "ds-hub-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(CacheDir);
    }

    protected string CacheDir { get; }

    internal static IReadOnlyDictionary<string, byte[]> Tiny => TinyFiles.Value;

    internal static FakeHub StartHub(IReadOnlyDictionary<string, byte[]>? files = null) => new(new Dictionary<string, FakeRepo>
    {
        [PublicRepo] = new(files ?? Tiny, FakeHub.Commit),
        [GatedRepo] = new(files ?? Tiny, FakeHub.Commit, Gated: true),
    });

    internal HubOptions Options(FakeHub hub, string? token = null) => new()
    {
        Endpoint = hub.Endpoint,
        CacheDir = CacheDir,
        Token = token,
        Environment = _ => null,
        Timeout = TimeSpan.FromSeconds(10),
        MaxParallelDownloads = 4,
    };

    internal string RepoFolder(string repo = PublicRepo) => Path.Combine(CacheDir, "models--" + repo.Replace("/", "--"));

    internal string Snapshot(string repo = PublicRepo) => Path.Combine(RepoFolder(repo), "snapshots", FakeHub.Commit);

    /// <summary>Files under the snapshot (links included), as repo paths.</summary>
    internal List<string> SnapshotFiles(string repo = PublicRepo) => !Directory.Exists(Snapshot(repo)) ? []
        : Directory.EnumerateFiles(Snapshot(repo), "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(Snapshot(repo), f).Replace('\\', '/')).Order(StringComparer.Ordinal).ToList();

    internal string[] Blobs(string repo = PublicRepo) => Directory.Exists(Path.Combine(RepoFolder(repo), "blobs"))
        ? Directory.GetFiles(Path.Combine(RepoFolder(repo), "blobs")).Select(f => Path.GetFileName(f)!).Order(StringComparer.Ordinal).ToArray()
        : [];

    public void Dispose()
    {
        try { Directory.Delete(CacheDir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        GC.SuppressFinalize(this);
    }
}
