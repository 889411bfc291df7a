using System.Security.Cryptography;

namespace DiffusersSharp.Hub;

/// <summary>
/// Fills one commit's snapshot: for each missing file, HEAD for its etag, download the blob once per etag (several at a
/// time) to <c>blobs/&lt;etag&gt;.incomplete</c> with resume, verify it, rename it into <c>blobs/</c>, then link the snapshot entry.
/// </summary>
internal sealed class SnapshotFetcher(HubHttp http, HubCache cache, string commit, HubOptions options, IProgress<DownloadProgress>? progress)
{
    private readonly HashSet<string> _done = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();
    private int _fileCount;

    public async Task FetchAsync(IReadOnlyList<string> files, CancellationToken ct)
    {
        lock (_gate) _fileCount = Math.Max(_fileCount, files.Count);
        var missing = new List<string>();
        foreach (var file in files)
        {
            if (!HubHttp.IsSafeRepoPath(file))
                throw new HubException(HubErrorKind.UnsupportedRepo, $"{cache.RepoId}: unsafe file path '{file}' in the repo listing.");
            if (File.Exists(cache.PointerPath(commit, file))) Finish(file, null); // a complete snapshot entry (a dangling link is not)
            else missing.Add(file);
        }
        if (missing.Count == 0) return;

        var metadata = new HubFileMetadata[missing.Count];
        var parallel = new ParallelOptions { MaxDegreeOfParallelism = options.MaxParallelDownloads, CancellationToken = ct };
        await Parallel.ForEachAsync(Enumerable.Range(0, missing.Count), parallel,
            async (i, token) => metadata[i] = await http.HeadAsync(commit, missing[i], token).ConfigureAwait(false)).ConfigureAwait(false);

        // Files with the same content share one blob: download it once.
        var groups = missing.Zip(metadata).GroupBy(p => p.Second.Etag, StringComparer.Ordinal).ToList();
        await Parallel.ForEachAsync(groups, parallel, async (group, token) =>
        {
            var (file, meta) = group.First();
            string blob = cache.BlobPath(meta.Etag);
            // The same lock file as huggingface_hub, so neither another process of ours nor Python writes this blob meanwhile.
            using (await cache.LockBlobAsync(meta.Etag, token).ConfigureAwait(false))
            {
                if (!File.Exists(blob)) await DownloadBlobAsync(file, meta, blob, token).ConfigureAwait(false);
                foreach (var (f, _) in group) cache.LinkSnapshotFile(commit, f, blob);
            }
            foreach (var (f, _) in group) Finish(f, meta.Size ?? new FileInfo(blob).Length);
        }).ConfigureAwait(false);
    }

    private async Task DownloadBlobAsync(string file, HubFileMetadata meta, string blob, CancellationToken ct)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(blob)!);
        string incomplete = blob + ".incomplete";
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                await http.DownloadAsync(meta.Location, file, incomplete, meta.Size,
                    bytes => progress?.Report(new DownloadProgress(file, bytes, meta.Size, DoneCount(), _fileCount, false)), ct).ConfigureAwait(false);
                break;
            }
            catch (HubException e) when (e.Kind == HubErrorKind.Network && attempt < options.MaxRetries)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(2000, 100 << attempt)), ct).ConfigureAwait(false);
            }
        }
        Verify(file, meta, incomplete);
        File.Move(incomplete, blob, overwrite: true);
    }

    /// <summary>An LFS file's etag is its sha256: a mismatch means corrupt bytes, which are deleted rather than cached.</summary>
    private void Verify(string file, HubFileMetadata meta, string incomplete)
    {
        if (meta.Etag.Length != 64 || !meta.Etag.All(Uri.IsHexDigit)) return;
        string actual;
        using (var stream = new FileStream(incomplete, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20))
            actual = Convert.ToHexStringLower(SHA256.HashData(stream));
        if (string.Equals(actual, meta.Etag, StringComparison.OrdinalIgnoreCase)) return;
        File.Delete(incomplete);
        throw new HubException(HubErrorKind.Integrity,
            $"{cache.RepoId}: '{file}' downloaded with sha256 {actual}, but the hub says {meta.Etag.ToLowerInvariant()}; the corrupt download was deleted, run again.");
    }

    private int DoneCount() { lock (_gate) return _done.Count; }

    private void Finish(string file, long? size)
    {
        int done;
        lock (_gate)
        {
            if (!_done.Add(file)) return; // model_index.json is asked for twice
            done = _done.Count;
        }
        long bytes = size ?? (File.Exists(cache.PointerPath(commit, file)) ? new FileInfo(cache.PointerPath(commit, file)).Length : 0);
        progress?.Report(new DownloadProgress(file, bytes, size ?? bytes, done, _fileCount, true));
    }
}
