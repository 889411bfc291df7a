namespace DiffusersSharp.Hub;

/// <summary>
/// How models are fetched from a Hugging Face Hub and cached. Unset values follow huggingface_hub's environment variables
/// (<c>HF_ENDPOINT</c>, <c>HF_TOKEN</c>, <c>HF_TOKEN_PATH</c>, <c>HF_HOME</c>, <c>HF_HUB_CACHE</c>, <c>HF_HUB_OFFLINE</c>),
/// so the cache is shared with Python.
/// </summary>
public sealed record HubOptions
{
    /// <summary>The public hub, used when neither <see cref="Endpoint"/> nor <c>HF_ENDPOINT</c> is set.</summary>
    public const string DefaultEndpoint = "https://huggingface.co";

    /// <summary>Hub base address; null: <c>HF_ENDPOINT</c>, else <see cref="DefaultEndpoint"/>.</summary>
    public string? Endpoint { get; init; }

    /// <summary>Access token; null: <c>HF_TOKEN</c>, else the token file written by <c>huggingface-cli login</c>. Never printed.</summary>
    public string? Token { get; init; }

    /// <summary>Hub cache folder (holding <c>models--org--name</c>); null: <c>HF_HUB_CACHE</c>, else <c>$HF_HOME/hub</c>.</summary>
    public string? CacheDir { get; init; }

    /// <summary>Branch, tag or commit hash.</summary>
    public string Revision { get; init; } = "main";

    /// <summary>Cache only, no network; null: <c>HF_HUB_OFFLINE</c> (1/true/yes/on).</summary>
    public bool? Offline { get; init; }

    /// <summary>Weights variant to fetch (e.g. "fp16"); null: the default (non-variant) safetensors.</summary>
    public string? Variant { get; init; }

    /// <summary>
    /// Components whose weights come from elsewhere (a single-file checkpoint): only their config and tokenizer files
    /// are fetched, and a cached snapshot without their weights is complete.
    /// </summary>
    public IReadOnlySet<string> ConfigOnlyComponents { get; init; } = new HashSet<string>();

    /// <summary>How many files download at once.</summary>
    public int MaxParallelDownloads { get; init; } = 8;

    /// <summary>How many times a file whose transfer broke is resumed (with <c>Range</c>) before giving up.</summary>
    public int MaxRetries { get; init; } = 3;

    /// <summary>Longest wait for a connection, for response headers, and between two reads of a body.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Reads environment variables (tests pass a fixed lookup so the machine's settings do not leak in).</summary>
    public Func<string, string?> Environment { get; init; } = System.Environment.GetEnvironmentVariable;

    /// <summary>The hub base address in effect, without a trailing slash.</summary>
    public string EffectiveEndpoint => (NonEmpty(Endpoint) ?? NonEmpty(Environment("HF_ENDPOINT")) ?? DefaultEndpoint).TrimEnd('/');

    /// <summary>The HF home folder: <c>HF_HOME</c>, else <c>~/.cache/huggingface</c> (or <c>$XDG_CACHE_HOME/huggingface</c>).</summary>
    public string HfHome => ExpandHome(NonEmpty(Environment("HF_HOME"))
        ?? Path.Combine(NonEmpty(Environment("XDG_CACHE_HOME")) ?? Path.Combine(UserHome(), ".cache"), "huggingface"));

    /// <summary>The cache folder in effect.</summary>
    public string EffectiveCacheDir => Path.GetFullPath(ExpandHome(NonEmpty(CacheDir) ?? NonEmpty(Environment("HF_HUB_CACHE"))
        ?? NonEmpty(Environment("HUGGINGFACE_HUB_CACHE")) ?? Path.Combine(HfHome, "hub")));

    /// <summary>Whether the network is off limits.</summary>
    public bool EffectiveOffline => Offline ?? NonEmpty(Environment("HF_HUB_OFFLINE"))?.Trim().ToLowerInvariant() is "1" or "true" or "yes" or "on";

    /// <summary>The token in effect (explicit, <c>HF_TOKEN</c>, then the token file), or null for anonymous access.</summary>
    public string? ResolveToken()
    {
        if (NonEmpty(Token) is { } explicitToken) return explicitToken.Trim();
        if (NonEmpty(Environment("HF_TOKEN")) is { } envToken) return envToken.Trim();
        string file = ExpandHome(NonEmpty(Environment("HF_TOKEN_PATH")) ?? Path.Combine(HfHome, "token"));
        try
        {
            return File.Exists(file) ? NonEmpty(File.ReadAllText(file).Trim()) : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null; // an unreadable token file means anonymous access, as in huggingface_hub
        }
    }

    /// <summary>Every setting, with the token masked.</summary>
    public override string ToString() =>
        $"HubOptions {{ Endpoint = {Endpoint ?? "(env/default)"}, Token = {(Token is null ? "(env/file)" : "***")}, CacheDir = {CacheDir ?? "(env/default)"}, " +
        $"Revision = {Revision}, Offline = {(Offline?.ToString() ?? "(env)")}, Variant = {Variant ?? "(none)"}, MaxParallelDownloads = {MaxParallelDownloads} }}";

    private static string? NonEmpty(string? s) => string.IsNullOrWhiteSpace(s) ? null : s;

    private static string UserHome() => System.Environment.GetFolderPath(System.Environment.SpecialFolder.UserProfile);

    private static string ExpandHome(string path) =>
        path == "~" ? UserHome() : path.StartsWith("~/", StringComparison.Ordinal) ? Path.Combine(UserHome(), path[2..]) : path;
}
