using System.Text.RegularExpressions;
using DiffusersSharp.IO;

namespace DiffusersSharp.Hub;

/// <summary>
/// Turns what a user names as a model into a local folder: an existing folder as is, or a Hugging Face Hub repo id
/// (<c>org/name</c>) fetched into the huggingface_hub cache (shared with Python) with only the files needed: a pipeline
/// repo's (<c>model_index.json</c> and its components) or a single-model repo's (a ControlNet or T2I-Adapter:
/// <c>config.json</c> and the weights at the root).
/// </summary>
public static partial class ModelSource
{
    /// <summary>
    /// The local folder of <paramref name="modelOrRepoId"/>: the folder itself when it exists, else the cache snapshot of
    /// the hub repo at <see cref="HubOptions.Revision"/>, downloading what is missing (unless offline).
    /// </summary>
    /// <exception cref="HubException">Not a folder nor a repo id, gated/unauthorized, missing repo/revision/file, offline and not cached, network failure, corrupted transfer.</exception>
    public static string Resolve(string modelOrRepoId, HubOptions options, IProgress<DownloadProgress>? progress = null, CancellationToken ct = default) =>
        ResolveAsync(modelOrRepoId, options, progress, ct).GetAwaiter().GetResult();

    /// <inheritdoc cref="Resolve"/>
    public static async Task<string> ResolveAsync(string modelOrRepoId, HubOptions options, IProgress<DownloadProgress>? progress = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(modelOrRepoId);
        ArgumentNullException.ThrowIfNull(options);
        if (Directory.Exists(modelOrRepoId)) return Path.GetFullPath(modelOrRepoId);
        string repoId = modelOrRepoId.Trim();
        if (!IsRepoId(repoId))
            throw new HubException(HubErrorKind.InvalidRepoId,
                $"'{modelOrRepoId}' is neither an existing folder nor a Hugging Face repo id of the form org/name.");
        if (string.IsNullOrWhiteSpace(options.Revision))
            throw new HubException(HubErrorKind.InvalidRepoId, "the revision is empty: give a branch, tag or commit hash.");
        if (options.MaxParallelDownloads < 1)
            throw new HubException(HubErrorKind.InvalidRepoId, $"MaxParallelDownloads must be at least 1 (got {options.MaxParallelDownloads}).");
        var cache = new HubCache(options.EffectiveCacheDir, repoId);

        if (options.EffectiveOffline)
            return CachedSnapshot(cache, options) ?? throw new HubException(HubErrorKind.NotCached,
                $"{repoId} (revision {options.Revision}) is not completely in the cache {options.EffectiveCacheDir} and offline mode is on (HF_HUB_OFFLINE): " +
                $"download it once online (diffusers download {repoId}) or turn offline mode off.");

        using var http = new HubHttp(options, repoId);
        RepoListing listing;
        try
        {
            listing = await http.ListAsync(options.Revision, ct).ConfigureAwait(false);
        }
        catch (HubException e) when (e.Kind == HubErrorKind.Network && CachedSnapshot(cache, options) is { } cached)
        {
            return cached; // as huggingface_hub: the hub is unreachable but the cache has this revision
        }
        string commit = listing.Commit;
        var fetcher = new SnapshotFetcher(http, cache, commit, options, progress);
        if (listing.Files.Contains(HubFileSelector.ModelIndexFile))
        {
            await fetcher.FetchAsync([HubFileSelector.ModelIndexFile], ct).ConfigureAwait(false);
            var index = ModelIndex.Read(cache.PointerPath(commit, HubFileSelector.ModelIndexFile));
            await fetcher.FetchAsync(HubFileSelector.Select(listing.Files, index, options.Variant, repoId, options.ConfigOnlyComponents), ct).ConfigureAwait(false);
        }
        else if (listing.Files.Contains(HubFileSelector.ModelConfigFile))
            await fetcher.FetchAsync(HubFileSelector.SelectModel(listing.Files, options.Variant, repoId), ct).ConfigureAwait(false);
        else
            throw new HubException(HubErrorKind.UnsupportedRepo,
                $"{repoId} has neither model_index.json (a diffusers pipeline) nor config.json (a diffusers model such as a ControlNet) at its root (single-file checkpoints are not supported).");
        cache.WriteRef(options.Revision, commit);
        return cache.SnapshotFolder(commit);
    }

    /// <summary>
    /// huggingface_hub's <c>hf_hub_download</c>: the local path of one repo file (a LoRA, an IP-Adapter or embedding file),
    /// from the cache snapshot of its revision (the reference's, else the options'), downloading it when missing (unless
    /// offline; with the hub unreachable a cached copy is used).
    /// </summary>
    /// <exception cref="HubException">Gated/unauthorized, missing repo/revision/file, offline and not cached, network failure, corrupted transfer.</exception>
    public static string ResolveFile(HubFileReference file, HubOptions options, IProgress<DownloadProgress>? progress = null, CancellationToken ct = default) =>
        ResolveFileAsync(file, options, progress, ct).GetAwaiter().GetResult();

    /// <inheritdoc cref="ResolveFile"/>
    public static async Task<string> ResolveFileAsync(HubFileReference file, HubOptions options, IProgress<DownloadProgress>? progress = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(options);
        if (file.Revision is { } revision) options = options with { Revision = revision };
        var cache = new HubCache(options.EffectiveCacheDir, file.RepoId);
        string? Cached() => cache.ReadRef(options.Revision) is { } commit && File.Exists(Path.Combine(cache.SnapshotFolder(commit), file.Path))
            ? Path.Combine(cache.SnapshotFolder(commit), file.Path) : null;
        if (options.EffectiveOffline)
            return Cached() ?? throw new HubException(HubErrorKind.NotCached,
                $"{file} is not in the cache {options.EffectiveCacheDir} and offline mode is on (HF_HUB_OFFLINE): download it once online or turn offline mode off.");

        using var http = new HubHttp(options, file.RepoId);
        RepoListing listing;
        try
        {
            listing = await http.ListAsync(options.Revision, ct).ConfigureAwait(false);
        }
        catch (HubException e) when (e.Kind == HubErrorKind.Network && Cached() is { } cached)
        {
            return cached;
        }
        if (!listing.Files.Contains(file.Path))
            throw new HubException(HubErrorKind.EntryNotFound, $"{file.RepoId} (revision {options.Revision}) has no file '{file.Path}'.");
        await new SnapshotFetcher(http, cache, listing.Commit, options, progress).FetchAsync([file.Path], ct).ConfigureAwait(false);
        cache.WriteRef(options.Revision, listing.Commit);
        return Path.Combine(cache.SnapshotFolder(listing.Commit), file.Path);
    }

    /// <summary>
    /// The local path of a model folder inside a repo (a CLIP image encoder such as h94/IP-Adapter's
    /// <c>models/image_encoder</c>, given as <c>hf://h94/IP-Adapter/models/image_encoder</c>): its config.json and
    /// safetensors weights, fetched into the cache snapshot as <see cref="ResolveFile"/> fetches a file.
    /// </summary>
    /// <inheritdoc cref="ResolveFile" path="/exception"/>
    public static string ResolveSubfolder(HubFileReference folder, HubOptions options, IProgress<DownloadProgress>? progress = null, CancellationToken ct = default) =>
        ResolveSubfolderAsync(folder, options, progress, ct).GetAwaiter().GetResult();

    /// <inheritdoc cref="ResolveSubfolder"/>
    public static async Task<string> ResolveSubfolderAsync(HubFileReference folder, HubOptions options, IProgress<DownloadProgress>? progress = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(options);
        if (folder.Revision is { } revision) options = options with { Revision = revision };
        var cache = new HubCache(options.EffectiveCacheDir, folder.RepoId);
        string? Cached() => cache.ReadRef(options.Revision) is { } commit && Path.Combine(cache.SnapshotFolder(commit), folder.Path) is var local
            && File.Exists(Path.Combine(local, HubFileSelector.ModelConfigFile)) && HasWeights(local, options.Variant) ? local : null;
        if (options.EffectiveOffline)
            return Cached() ?? throw new HubException(HubErrorKind.NotCached,
                $"{folder} is not in the cache {options.EffectiveCacheDir} and offline mode is on (HF_HUB_OFFLINE): download it once online or turn offline mode off.");

        using var http = new HubHttp(options, folder.RepoId);
        RepoListing listing;
        try
        {
            listing = await http.ListAsync(options.Revision, ct).ConfigureAwait(false);
        }
        catch (HubException e) when (e.Kind == HubErrorKind.Network && Cached() is { } cached)
        {
            return cached;
        }
        var files = HubFileSelector.SelectModel(listing.Files, options.Variant, folder.RepoId, folder.Path);
        await new SnapshotFetcher(http, cache, listing.Commit, options, progress).FetchAsync(files, ct).ConfigureAwait(false);
        cache.WriteRef(options.Revision, listing.Commit);
        return Path.Combine(cache.SnapshotFolder(listing.Commit), folder.Path);
    }

    /// <summary>Whether <paramref name="text"/> has the form of a hub repo id (<c>org/name</c>).</summary>
    public static bool IsRepoId(string text) => RepoIdRegex().IsMatch(text) && !text.Contains("--", StringComparison.Ordinal) && !text.Contains("..", StringComparison.Ordinal);

    /// <summary>
    /// The cached snapshot of the options' revision when it holds the whole pipeline (model_index.json, every non-empty
    /// component folder, and weights for each model component) or, for a single-model repo, its config.json and weights;
    /// else null. Never touches the network.
    /// </summary>
    public static string? CachedSnapshot(HubCache cache, HubOptions options)
    {
        string? commit = cache.ReadRef(options.Revision);
        if (commit is null) return null;
        string snapshot = cache.SnapshotFolder(commit);
        string indexPath = Path.Combine(snapshot, HubFileSelector.ModelIndexFile);
        if (!File.Exists(indexPath))
            return File.Exists(Path.Combine(snapshot, HubFileSelector.ModelConfigFile)) && HasWeights(snapshot, options.Variant) ? snapshot : null;
        ModelIndex index;
        try { index = ModelIndex.Read(indexPath); }
        catch (InvalidDataException) { return null; }
        foreach (var (component, spec) in index.Components)
        {
            if (spec.IsEmpty || HubFileSelector.IsUnused(component, index.ClassName)) continue;
            string folder = Path.Combine(snapshot, component);
            if (!Directory.Exists(folder) || !Directory.EnumerateFiles(folder).Any(File.Exists)) return null;
            if (File.Exists(Path.Combine(folder, "config.json")) && !options.ConfigOnlyComponents.Contains(component)
                && !HasWeights(folder, options.Variant)) return null;
        }
        return snapshot;
    }

    private static bool HasWeights(string folder, string? variant)
    {
        try
        {
            if (variant is not null)
            {
                try { if (WeightFiles.FindFiles(folder, variant) is not null) return true; }
                catch (FileNotFoundException) { } // no such variant here: the default weights stand in, as when downloading
            }
            return WeightFiles.FindFiles(folder) is not null;
        }
        catch (Exception e) when (e is FileNotFoundException or InvalidDataException)
        {
            return false;
        }
    }

    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")]
    private static partial Regex RepoIdRegex();
}
