using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;

namespace DiffusersSharp.Hub;

/// <summary>A repo's file list at one commit, from <c>GET /api/models/{repo}/revision/{revision}</c>.</summary>
internal sealed record RepoListing(string Commit, IReadOnlyList<string> Files);

/// <summary>What a <c>HEAD</c> on a file's resolve address says: the commit, the etag (sha256 for LFS files), the size and where the bytes are.</summary>
internal sealed record HubFileMetadata(string Commit, string Etag, long? Size, Uri Location);

/// <summary>
/// The hub's HTTP protocol as huggingface_hub speaks it: bearer token sent only to the hub's own origin (never to a CDN a
/// redirect points at), HEAD with relative redirects followed and absolute ones reported, resumable GETs, and the hub's
/// error headers (<c>X-Error-Code</c>, <c>X-Error-Message</c>) turned into <see cref="HubException"/>s.
/// </summary>
internal sealed class HubHttp : IDisposable
{
    private const int MaxRedirects = 10;
    private readonly HttpClient _client;
    private readonly Uri _endpoint;
    private readonly string _publicEndpoint;
    private readonly string? _token;
    private readonly TimeSpan _timeout;
    private readonly string _repoId;

    public HubHttp(HubOptions options, string repoId)
    {
        _publicEndpoint = options.EffectiveEndpoint;
        if (!Uri.TryCreate(_publicEndpoint + "/", UriKind.Absolute, out var endpoint) || endpoint.Scheme is not ("http" or "https"))
            throw new HubException(HubErrorKind.InvalidRepoId, $"hub endpoint '{_publicEndpoint}' is not an http(s) address.");
        _endpoint = endpoint;
        _token = options.ResolveToken();
        _timeout = options.Timeout;
        _repoId = repoId;
        var handler = new SocketsHttpHandler
        {
            AllowAutoRedirect = false, // redirects are followed here, so the token never goes to another host
            AutomaticDecompression = DecompressionMethods.None,
            ConnectTimeout = options.Timeout,
            MaxConnectionsPerServer = Math.Max(2, options.MaxParallelDownloads * 2),
        };
        _client = new HttpClient(handler) { Timeout = System.Threading.Timeout.InfiniteTimeSpan };
        _client.DefaultRequestHeaders.UserAgent.ParseAdd("DiffusersSharp/1.0");
    }

    /// <summary>Whether a token is in use (it changes what a 401 means).</summary>
    public bool HasToken => _token is not null;

    public async Task<RepoListing> ListAsync(string revision, CancellationToken ct)
    {
        var url = new Uri(_endpoint, $"api/models/{_repoId}/revision/{Uri.EscapeDataString(revision)}");
        using var response = await SendAsync(HttpMethod.Get, url, followAbsoluteRedirects: false, rangeFrom: 0, ct).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode) await ThrowForStatusAsync(response, $"revision '{revision}'", revision, null, ct).ConfigureAwait(false);
        string body = await WithTimeout(t => response.Content.ReadAsStringAsync(t), ct).ConfigureAwait(false);
        try
        {
            using var doc = JsonDocument.Parse(body);
            var root = doc.RootElement;
            string? sha = root.TryGetProperty("sha", out var s) && s.ValueKind == JsonValueKind.String ? s.GetString() : null;
            if (sha is null || !HubCache.IsCommitHash(sha))
                throw new HubException(HubErrorKind.Network, $"{url}: the hub's answer has no commit hash (\"sha\").");
            var files = new List<string>();
            if (root.TryGetProperty("siblings", out var siblings) && siblings.ValueKind == JsonValueKind.Array)
                foreach (var sibling in siblings.EnumerateArray())
                    if (sibling.TryGetProperty("rfilename", out var f) && f.GetString() is { Length: > 0 } name && IsSafeRepoPath(name))
                        files.Add(name);
            return new RepoListing(sha, files);
        }
        catch (JsonException e)
        {
            throw new HubException(HubErrorKind.Network, $"{url}: the hub's answer is not valid JSON ({e.Message}).");
        }
    }

    public async Task<HubFileMetadata> HeadAsync(string commit, string repoFile, CancellationToken ct)
    {
        var url = ResolveUrl(commit, repoFile);
        using var response = await SendAsync(HttpMethod.Head, url, followAbsoluteRedirects: false, rangeFrom: 0, ct).ConfigureAwait(false);
        int status = (int)response.StatusCode;
        if (status is < 200 or >= 400) await ThrowForStatusAsync(response, $"file '{repoFile}'", commit, repoFile, ct).ConfigureAwait(false);
        string? etag = Header(response, "X-Linked-Etag") ?? Header(response, "ETag");
        if (etag is null)
            throw new HubException(HubErrorKind.Network, $"{_repoId}: the hub sent no ETag for '{repoFile}', so it cannot be cached.");
        etag = NormalizeEtag(etag);
        if (etag.Length == 0 || etag.Contains('/') || etag.Contains('\\') || etag.Contains(".."))
            throw new HubException(HubErrorKind.Network, $"{_repoId}: the hub sent an unusable ETag for '{repoFile}'.");
        long? size = long.TryParse(Header(response, "X-Linked-Size"), out long linked) ? linked : response.Content.Headers.ContentLength;
        var location = status >= 300 && response.Headers.Location is { } loc ? new Uri(url, loc) : url;
        return new HubFileMetadata(Header(response, "X-Repo-Commit") ?? commit, etag, size, location);
    }

    /// <summary>
    /// One attempt at fetching <paramref name="location"/> into <paramref name="incompletePath"/>, resuming with
    /// <c>Range</c> from what is already there. Returns when the body ended with the expected size.
    /// </summary>
    public async Task DownloadAsync(Uri location, string repoFile, string incompletePath, long? expectedSize, Action<long> onBytes, CancellationToken ct)
    {
        long have = File.Exists(incompletePath) ? new FileInfo(incompletePath).Length : 0;
        if (expectedSize is { } size0 && have > size0) { File.Delete(incompletePath); have = 0; }
        if (expectedSize is { } size1 && have == size1 && have > 0) return; // a previous attempt got every byte
        using var response = await SendAsync(HttpMethod.Get, location, followAbsoluteRedirects: true, rangeFrom: have, ct).ConfigureAwait(false);
        if (response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable)
        {
            File.Delete(incompletePath); // the partial file does not fit the remote one: start over on the next attempt
            throw new HubException(HubErrorKind.Network, $"{_repoId}: the server refused to resume '{repoFile}'.");
        }
        if (!response.IsSuccessStatusCode) await ThrowForStatusAsync(response, $"file '{repoFile}'", null, repoFile, ct).ConfigureAwait(false);
        bool append = response.StatusCode == HttpStatusCode.PartialContent;
        if (append && response.Content.Headers.ContentRange?.From is { } from && from != have)
            throw new HubException(HubErrorKind.Network, $"{_repoId}: the server resumed '{repoFile}' at byte {from} instead of {have}.");
        if (!append) have = 0;
        onBytes(have);
        try
        {
            await using var file = new FileStream(incompletePath, append ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16, useAsync: true);
            await using var body = await WithTimeout(t => response.Content.ReadAsStreamAsync(t), ct).ConfigureAwait(false);
            var buffer = new byte[1 << 16];
            while (true)
            {
                int n = await WithTimeout(t => body.ReadAsync(buffer, t).AsTask(), ct).ConfigureAwait(false);
                if (n == 0) break;
                await file.WriteAsync(buffer.AsMemory(0, n), ct).ConfigureAwait(false);
                have += n;
                if (expectedSize is { } max && have > max)
                    break;
                onBytes(have);
            }
            await file.FlushAsync(ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or HttpRequestException)
        {
            throw new HubException(HubErrorKind.Network, $"{_repoId}: the transfer of '{repoFile}' broke after {have} bytes ({e.Message}); it resumes from there.", e);
        }
        if (expectedSize is { } expected && have != expected)
        {
            if (have < expected)
                throw new HubException(HubErrorKind.Network, $"{_repoId}: the transfer of '{repoFile}' ended after {have} of {expected} bytes; it resumes from there.");
            File.Delete(incompletePath);
            throw new HubException(HubErrorKind.Integrity, $"{_repoId}: '{repoFile}' came with more bytes than the hub's size ({expected}); the download was deleted.");
        }
    }

    public Uri ResolveUrl(string revision, string repoFile) =>
        new(_endpoint, $"{_repoId}/resolve/{Uri.EscapeDataString(revision)}/{string.Join('/', repoFile.Split('/').Select(Uri.EscapeDataString))}");

    /// <summary>A repo path that stays inside the snapshot folder.</summary>
    public static bool IsSafeRepoPath(string path) =>
        !path.StartsWith('/') && !path.Contains('\\') && !path.Contains('\0') && path.Split('/').All(p => p is not ("" or "." or ".."));

    /// <summary>huggingface_hub's etag normalization: no weak prefix, no quotes.</summary>
    public static string NormalizeEtag(string etag)
    {
        string e = etag.Trim();
        if (e.StartsWith("W/", StringComparison.Ordinal)) e = e[2..];
        return e.Trim('"');
    }

    private async Task<HttpResponseMessage> SendAsync(HttpMethod method, Uri url, bool followAbsoluteRedirects, long rangeFrom, CancellationToken ct)
    {
        for (int hop = 0; ; hop++)
        {
            using var request = new HttpRequestMessage(method, url);
            // Only the hub itself gets the token; a CDN (another host or port) gets a signed address instead.
            if (_token is not null && SameOrigin(url, _endpoint)) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _token);
            request.Headers.AcceptEncoding.Add(new StringWithQualityHeaderValue("identity"));
            if (rangeFrom > 0) request.Headers.Range = new RangeHeaderValue(rangeFrom, null);
            HttpResponseMessage response;
            try
            {
                response = await WithTimeout(t => _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, t), ct).ConfigureAwait(false);
            }
            catch (HttpRequestException e)
            {
                throw new HubException(HubErrorKind.Network, $"cannot reach the hub at {url.GetLeftPart(UriPartial.Authority)} ({e.Message}).", e);
            }
            int status = (int)response.StatusCode;
            if (status is >= 300 and < 400 && response.Headers.Location is { } location)
            {
                var target = new Uri(url, location);
                if (!followAbsoluteRedirects && !SameOrigin(target, url)) return response; // HEAD: the redirect carries the LFS metadata
                response.Dispose();
                if (hop >= MaxRedirects) throw new HubException(HubErrorKind.Network, $"too many redirects from {url}.");
                url = target;
                continue;
            }
            return response;
        }
    }

    private async Task<T> WithTimeout<T>(Func<CancellationToken, Task<T>> op, CancellationToken ct)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(_timeout);
        try
        {
            return await op(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new HubException(HubErrorKind.Network, $"{_repoId}: the hub did not answer within {_timeout.TotalSeconds:0.#} s.");
        }
    }

    private static bool SameOrigin(Uri a, Uri b) =>
        string.Equals(a.Scheme, b.Scheme, StringComparison.OrdinalIgnoreCase) && string.Equals(a.Host, b.Host, StringComparison.OrdinalIgnoreCase) && a.Port == b.Port;

    private static string? Header(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out var values) || response.Content.Headers.TryGetValues(name, out values)
            ? values.FirstOrDefault(v => !string.IsNullOrWhiteSpace(v)) : null;

    private async Task ThrowForStatusAsync(HttpResponseMessage response, string what, string? revision, string? repoFile, CancellationToken ct)
    {
        int status = (int)response.StatusCode;
        string? code = Header(response, "X-Error-Code");
        string? hubMessage = Header(response, "X-Error-Message");
        if (hubMessage is null && response.RequestMessage?.Method != HttpMethod.Head)
        {
            try { hubMessage = ErrorFromBody(await WithTimeout(t => response.Content.ReadAsStringAsync(t), ct).ConfigureAwait(false)); }
            catch (Exception e) when (e is HubException or IOException or HttpRequestException) { }
        }
        string detail = hubMessage is null ? $"HTTP {status}" : $"HTTP {status}: {Mask(hubMessage)}";
        string page = $"{_publicEndpoint}/{_repoId}";
        throw code switch
        {
            "GatedRepo" => new HubException(HubErrorKind.GatedRepo,
                $"{_repoId} is a gated model: accept its licence on the model page {page} (logged in), then pass an access token of that account " +
                $"with --token or the HF_TOKEN environment variable{(_token is null ? "" : " (the token in use has not been granted access)")}. ({detail})"),
            "RepoNotFound" => RepoNotFound(detail),
            "RevisionNotFound" => new HubException(HubErrorKind.RevisionNotFound, $"{_repoId} has no branch, tag or commit '{revision}'. ({detail})"),
            "EntryNotFound" => new HubException(HubErrorKind.EntryNotFound, $"{_repoId} has no {what}. ({detail})"),
            _ => status switch
            {
                401 when _token is not null => new HubException(HubErrorKind.Unauthorized,
                    $"the hub rejected the access token for {_repoId} (invalid or expired): create a new one at {_publicEndpoint}/settings/tokens and pass it with --token or HF_TOKEN. ({detail})"),
                401 => new HubException(HubErrorKind.Unauthorized,
                    $"{_repoId} needs authentication: if it is gated, accept its licence on {page}; then pass an access token with --token or HF_TOKEN. ({detail})"),
                403 => new HubException(HubErrorKind.GatedRepo,
                    $"access to {_repoId} is denied: accept its licence on the model page {page} and use a token of an account that has access (--token or HF_TOKEN). ({detail})"),
                404 when repoFile is null && revision is not null => RepoNotFound(detail),
                404 => new HubException(HubErrorKind.EntryNotFound, $"{_repoId} has no {what}. ({detail})"),
                _ => new HubException(HubErrorKind.Network, $"the hub answered {detail} for {what} of {_repoId}."),
            },
        };
    }

    private HubException RepoNotFound(string detail) => new(HubErrorKind.RepoNotFound,
        $"repository {_repoId} not found on {_publicEndpoint}: check the id{(_token is null ? ", or pass a token (--token or HF_TOKEN) if it is private" : "")}. ({detail})");

    private static string? ErrorFromBody(string body)
    {
        if (string.IsNullOrWhiteSpace(body)) return null;
        try
        {
            using var doc = JsonDocument.Parse(body);
            if (doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("error", out var e) && e.ValueKind == JsonValueKind.String)
                return e.GetString();
        }
        catch (JsonException) { }
        return body.Length > 200 ? body[..200] : body.Trim();
    }

    private string Mask(string text) => _token is null ? text : text.Replace(_token, "***", StringComparison.Ordinal);

    public void Dispose() => _client.Dispose();
}
