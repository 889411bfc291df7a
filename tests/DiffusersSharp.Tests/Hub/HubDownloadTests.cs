using DiffusersSharp.Hub;

namespace DiffusersSharp.Tests.Hub;

public sealed class HubDownloadTests : HubTestBase
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    private static Task<string> Resolve(string repo, HubOptions options, IProgress<DownloadProgress>? progress = null) =>
        ModelSource.ResolveAsync(repo, options, progress).WaitAsync(Bound);

    [Fact]
    public async Task Full_download_fills_the_cache_like_huggingface_hub_then_is_reused_offline()
    {
        await using var hub = StartHub();
        var reports = new List<DownloadProgress>();
        var progress = new SyncProgress(reports);

        string folder = await Resolve(PublicRepo, Options(hub), progress);

        Assert.Equal(Snapshot(), folder);
        Assert.Equal(Tiny.Keys.Order(StringComparer.Ordinal), SnapshotFiles());
        foreach (var (path, content) in Tiny)
        {
            string entry = Path.Combine(folder, path);
            // snapshot entries are relative symlinks into blobs/, named by sha256 (LFS) or the git blob id
            string? target = new FileInfo(entry).LinkTarget;
            Assert.NotNull(target);
            Assert.False(Path.IsPathRooted(target));
            string blob = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(entry)!, target!));
            Assert.Equal(Path.Combine(RepoFolder(), "blobs", FakeHub.BlobName(path, content)), blob);
            Assert.Equal(content, File.ReadAllBytes(entry));
        }
        Assert.Equal(FakeHub.Commit, File.ReadAllText(Path.Combine(RepoFolder(), "refs", "main")));
        Assert.DoesNotContain(Blobs(), b => b.EndsWith(".incomplete", StringComparison.Ordinal));
        // tokenizer/merges.txt and tokenizer_2/merges.txt have the same bytes: one blob, downloaded once
        Assert.Equal(Tiny.Select(f => FakeHub.BlobName(f.Key, f.Value)).Distinct().Count(), Blobs().Length);
        Assert.Equal(Tiny.Count, reports.Count(r => r.Done));
        Assert.Contains(reports, r => r.Done && r.FilesDone == Tiny.Count && r.FileCount == Tiny.Count);

        int before = hub.Requests.Count;
        Assert.Equal(folder, await Resolve(PublicRepo, Options(hub) with { Offline = true }));
        Assert.Equal(before, hub.Requests.Count);

        // online again: only the revision listing, no file is fetched twice
        Assert.Equal(folder, await Resolve(PublicRepo, Options(hub)));
        var again = hub.Requests.Skip(before).ToList();
        Assert.Single(again);
        Assert.StartsWith("/api/models/test-org/tiny-sd3/revision/main", again[0].Path);
    }

    [Fact]
    public async Task Offline_mode_comes_from_HF_HUB_OFFLINE_and_fails_clearly_when_not_cached()
    {
        await using var hub = StartHub();
        var options = Options(hub) with { Environment = name => name == "HF_HUB_OFFLINE" ? "1" : null };
        var e = await Assert.ThrowsAsync<HubException>(() => Resolve(PublicRepo, options));
        Assert.Equal(HubErrorKind.NotCached, e.Kind);
        Assert.Contains("offline", e.Message);
        Assert.Contains(PublicRepo, e.Message);
        Assert.Empty(hub.Requests);
    }

    [Fact]
    public async Task A_cache_written_by_python_is_used_without_downloading()
    {
        // the layout huggingface_hub writes: blobs/<etag>, snapshots/<commit>/<path> -> ../../blobs/<etag>, refs/main
        foreach (var (path, content) in Tiny)
        {
            string blob = Path.Combine(RepoFolder(), "blobs", FakeHub.BlobName(path, content));
            Directory.CreateDirectory(Path.GetDirectoryName(blob)!);
            File.WriteAllBytes(blob, content);
            string entry = Path.Combine(Snapshot(), path);
            Directory.CreateDirectory(Path.GetDirectoryName(entry)!);
            File.CreateSymbolicLink(entry, Path.GetRelativePath(Path.GetDirectoryName(entry)!, blob));
        }
        Directory.CreateDirectory(Path.Combine(RepoFolder(), "refs"));
        File.WriteAllText(Path.Combine(RepoFolder(), "refs", "main"), FakeHub.Commit);

        await using var hub = StartHub();
        Assert.Equal(Snapshot(), await Resolve(PublicRepo, Options(hub) with { Offline = true }));
        Assert.Empty(hub.Requests);
        Assert.Equal(Snapshot(), await Resolve(PublicRepo, Options(hub) with { Revision = FakeHub.Commit, Offline = true }));
        Assert.Empty(hub.Requests);

        Assert.Equal(Snapshot(), await Resolve(PublicRepo, Options(hub)));
        Assert.Equal(["hub GET /api/models/test-org/tiny-sd3/revision/main"], hub.Requests.Select(r => $"{r.Server} {r.Method} {r.Path}"));
    }

    [Fact]
    public async Task Weights_from_a_single_file_are_not_downloaded_and_their_absence_is_a_complete_cache()
    {
        await using var hub = StartHub();
        var configOnly = Options(hub) with { ConfigOnlyComponents = new HashSet<string> { "transformer" } };
        string folder = await Resolve(PublicRepo, configOnly);
        Assert.True(File.Exists(Path.Combine(folder, "transformer", "config.json")));
        Assert.False(File.Exists(Path.Combine(folder, "transformer", "diffusion_pytorch_model.safetensors")));
        Assert.True(File.Exists(Path.Combine(folder, "vae", "diffusion_pytorch_model.safetensors")));
        Assert.Equal(folder, await Resolve(PublicRepo, configOnly with { Offline = true }));
        // Without the single file the snapshot lacks the transformer's weights: not usable offline.
        var e = await Assert.ThrowsAsync<HubException>(() => Resolve(PublicRepo, Options(hub) with { Offline = true }));
        Assert.Equal(HubErrorKind.NotCached, e.Kind);
    }

    [Fact]
    public async Task Offline_rejects_an_incomplete_snapshot()
    {
        await using var hub = StartHub();
        string folder = await Resolve(PublicRepo, Options(hub));
        File.Delete(Path.Combine(folder, "vae", "diffusion_pytorch_model.safetensors"));
        var e = await Assert.ThrowsAsync<HubException>(() => Resolve(PublicRepo, Options(hub) with { Offline = true }));
        Assert.Equal(HubErrorKind.NotCached, e.Kind);
        // online, only the missing entry is looked up; its blob is still there, so it is linked, not downloaded
        int before = hub.Requests.Count;
        Assert.Equal(folder, await Resolve(PublicRepo, Options(hub)));
        var requests = hub.Requests.Skip(before).Select(r => $"{r.Server} {r.Method} {r.Path}").ToList();
        Assert.Equal(["hub GET /api/models/test-org/tiny-sd3/revision/main",
            $"hub HEAD /test-org/tiny-sd3/resolve/{FakeHub.Commit}/vae/diffusion_pytorch_model.safetensors"], requests);
        Assert.Equal(Tiny["vae/diffusion_pytorch_model.safetensors"], File.ReadAllBytes(Path.Combine(folder, "vae", "diffusion_pytorch_model.safetensors")));

        // with the blob gone as well, it is downloaded again
        File.Delete(Path.Combine(folder, "vae", "diffusion_pytorch_model.safetensors"));
        File.Delete(Path.Combine(RepoFolder(), "blobs", FakeHub.Sha256(Tiny["vae/diffusion_pytorch_model.safetensors"])));
        before = hub.Requests.Count;
        Assert.Equal(folder, await Resolve(PublicRepo, Options(hub)));
        Assert.Equal(3, hub.Requests.Count - before); // listing, HEAD, GET at the CDN
        Assert.Equal(Tiny["vae/diffusion_pytorch_model.safetensors"], File.ReadAllBytes(Path.Combine(folder, "vae", "diffusion_pytorch_model.safetensors")));
    }

    [Fact]
    public async Task Token_goes_to_the_hub_as_bearer_but_never_to_the_lfs_host()
    {
        await using var hub = StartHub();
        await Resolve(GatedRepo, Options(hub, FakeHub.GrantedToken));
        var hubRequests = hub.Requests.Where(r => r.Server == "hub").ToList();
        var cdnRequests = hub.Requests.Where(r => r.Server == "cdn").ToList();
        Assert.NotEmpty(hubRequests);
        Assert.All(hubRequests, r => Assert.Equal("Bearer " + FakeHub.GrantedToken, r.Authorization));
        Assert.Equal(Tiny.Keys.Count(FakeHub.IsLfs), cdnRequests.Count);
        Assert.All(cdnRequests, r => Assert.Null(r.Authorization));
    }

    [Fact]
    public async Task Token_file_and_HF_TOKEN_are_used_when_no_token_is_given()
    {
        await using var hub = StartHub();
        string home = Path.Combine(CacheDir, "hf-home");
        Directory.CreateDirectory(home);
        File.WriteAllText(Path.Combine(home, "token"), FakeHub.GrantedToken + "\n");
        var fromFile = Options(hub) with { Environment = n => n == "HF_HOME" ? home : null };
        Assert.Equal(FakeHub.GrantedToken, fromFile.ResolveToken());
        await Resolve(GatedRepo, fromFile);
        Assert.All(hub.Requests.Where(r => r.Server == "hub"), r => Assert.Equal("Bearer " + FakeHub.GrantedToken, r.Authorization));

        var fromEnv = Options(hub) with { Environment = n => n switch { "HF_HOME" => home, "HF_TOKEN" => "hf_env", _ => null } };
        Assert.Equal("hf_env", fromEnv.ResolveToken());
        Assert.Equal("hf_explicit", (fromEnv with { Token = "hf_explicit" }).ResolveToken());
    }

    [Fact]
    public async Task Gated_repo_without_access_says_to_accept_the_licence_and_set_a_token()
    {
        await using var hub = StartHub();
        var anonymous = await Assert.ThrowsAsync<HubException>(() => Resolve(GatedRepo, Options(hub)));
        Assert.Equal(HubErrorKind.GatedRepo, anonymous.Kind);
        Assert.True(anonymous.IsInvalidInput);
        Assert.Contains($"{hub.Endpoint}/{GatedRepo}", anonymous.Message);
        Assert.Contains("licence", anonymous.Message);
        Assert.Contains("--token", anonymous.Message);
        Assert.Contains("HF_TOKEN", anonymous.Message);

        var denied = await Assert.ThrowsAsync<HubException>(() => Resolve(GatedRepo, Options(hub, FakeHub.NotGrantedToken)));
        Assert.Equal(HubErrorKind.GatedRepo, denied.Kind);
        Assert.Contains("not been granted", denied.Message);
        Assert.DoesNotContain(FakeHub.NotGrantedToken, denied.ToString());

        const string wrong = "hf_wrong_secret_value";
        var rejected = await Assert.ThrowsAsync<HubException>(() => Resolve(GatedRepo, Options(hub, wrong)));
        Assert.Equal(HubErrorKind.Unauthorized, rejected.Kind);
        Assert.Contains("rejected the access token", rejected.Message);
        Assert.DoesNotContain(wrong, rejected.ToString());
        Assert.Contains("Bearer " + wrong, hub.Requests.Select(r => r.Authorization));
        Assert.False(Directory.Exists(Snapshot(GatedRepo)));
    }

    [Fact]
    public async Task Missing_repo_revision_and_bad_ids_are_clear_errors()
    {
        await using var hub = StartHub();
        var repo = await Assert.ThrowsAsync<HubException>(() => Resolve("test-org/no-such-model", Options(hub)));
        Assert.Equal(HubErrorKind.RepoNotFound, repo.Kind);
        Assert.Contains("test-org/no-such-model", repo.Message);
        Assert.Contains("not found", repo.Message);

        var revision = await Assert.ThrowsAsync<HubException>(() => Resolve(PublicRepo, Options(hub) with { Revision = "v9" }));
        Assert.Equal(HubErrorKind.RevisionNotFound, revision.Kind);
        Assert.Contains("'v9'", revision.Message);

        var id = await Assert.ThrowsAsync<HubException>(() => Resolve("not a/repo/id", Options(hub)));
        Assert.Equal(HubErrorKind.InvalidRepoId, id.Kind);
        Assert.DoesNotContain(hub.Requests, r => r.Path.Contains("not"));

        // an existing folder is returned as is, without the hub
        int before = hub.Requests.Count;
        Assert.Equal(Path.GetFullPath(CacheDir), await Resolve(CacheDir, Options(hub)));
        Assert.Equal(before, hub.Requests.Count);
    }

    [Fact]
    public async Task An_unreachable_hub_falls_back_to_the_cache_or_says_it_cannot_connect()
    {
        string deadEndpoint;
        var probe = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        probe.Start();
        deadEndpoint = $"http://127.0.0.1:{((System.Net.IPEndPoint)probe.LocalEndpoint).Port}";
        probe.Stop(); // nothing listens there now: connections are refused

        await using var hub = StartHub();
        var dead = Options(hub) with { Endpoint = deadEndpoint, MaxRetries = 0 };
        var e = await Assert.ThrowsAsync<HubException>(() => Resolve(PublicRepo, dead));
        Assert.Equal(HubErrorKind.Network, e.Kind);
        Assert.Contains("cannot reach the hub", e.Message);

        string folder = await Resolve(PublicRepo, Options(hub));
        Assert.Equal(folder, await Resolve(PublicRepo, dead));
    }

    [Fact]
    public async Task A_component_file_missing_from_the_repo_is_reported()
    {
        var files = new Dictionary<string, byte[]>(Tiny);
        files.Remove("vae/config.json");
        files.Remove("vae/diffusion_pytorch_model.safetensors");
        await using var hub = StartHub(files);
        var e = await Assert.ThrowsAsync<HubException>(() => Resolve(PublicRepo, Options(hub)));
        Assert.Equal(HubErrorKind.EntryNotFound, e.Kind);
        Assert.Contains("'vae'", e.Message);
    }

    [Fact]
    public async Task An_interrupted_transfer_keeps_its_partial_file_and_resumes_with_range()
    {
        await using var hub = StartHub();
        const string file = "text_encoder/model.safetensors";
        string sha = FakeHub.Sha256(Tiny[file]);
        int half = Tiny[file].Length / 2;
        hub.DropOnce[sha] = half;

        var e = await Assert.ThrowsAsync<HubException>(() => Resolve(PublicRepo, Options(hub) with { MaxRetries = 0 }));
        Assert.Equal(HubErrorKind.Network, e.Kind);
        Assert.False(e.IsInvalidInput);
        string incomplete = Path.Combine(RepoFolder(), "blobs", sha + ".incomplete");
        Assert.True(File.Exists(incomplete));
        Assert.Equal(half, new FileInfo(incomplete).Length);
        Assert.DoesNotContain(sha, Blobs());
        Assert.False(File.Exists(Path.Combine(Snapshot(), file)));
        Assert.False(File.Exists(Path.Combine(RepoFolder(), "refs", "main")));

        string folder = await Resolve(PublicRepo, Options(hub) with { MaxRetries = 0 });
        Assert.Equal(Tiny[file], File.ReadAllBytes(Path.Combine(folder, file)));
        Assert.False(File.Exists(incomplete));
        var gets = hub.Requests.Where(r => r.Server == "cdn" && r.Path.StartsWith($"/lfs/{sha}", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, gets.Count);
        Assert.Null(gets[0].Range);
        Assert.Equal($"bytes={half}-", gets[1].Range);
    }

    [Fact]
    public async Task A_broken_transfer_is_retried_from_where_it_stopped_within_one_call()
    {
        await using var hub = StartHub();
        const string file = "transformer/diffusion_pytorch_model.safetensors";
        string sha = FakeHub.Sha256(Tiny[file]);
        hub.DropOnce[sha] = 1000;
        string folder = await Resolve(PublicRepo, Options(hub));
        Assert.Equal(Tiny[file], File.ReadAllBytes(Path.Combine(folder, file)));
        Assert.Contains(hub.Requests, r => r.Server == "cdn" && r.Range == "bytes=1000-");
    }

    [Fact]
    public async Task Concurrent_downloads_into_one_cache_fetch_each_blob_once()
    {
        await using var hub = StartHub();
        var results = await Task.WhenAll(Resolve(PublicRepo, Options(hub)), Resolve(PublicRepo, Options(hub)), Resolve(GatedRepo, Options(hub, FakeHub.GrantedToken)));
        Assert.Equal([Snapshot(), Snapshot(), Snapshot(GatedRepo)], results);
        foreach (var (path, content) in Tiny) Assert.Equal(content, File.ReadAllBytes(Path.Combine(Snapshot(), path)));
        var lfsGets = hub.Requests.Where(r => r.Server == "cdn").GroupBy(r => r.Path).ToList();
        // one download per blob per repo folder (each repo has its own blobs/)
        Assert.All(lfsGets, g => Assert.Equal(2, g.Count()));
        Assert.Equal(Tiny.Keys.Count(FakeHub.IsLfs), lfsGets.Count);
        Assert.True(File.Exists(Path.Combine(CacheDir, ".locks", "models--test-org--tiny-sd3", FakeHub.Sha256(Tiny["vae/diffusion_pytorch_model.safetensors"]) + ".lock")));
    }

    [Fact]
    public async Task Corrupted_bytes_are_detected_and_never_reach_blobs_or_snapshots()
    {
        await using var hub = StartHub();
        const string file = "vae/diffusion_pytorch_model.safetensors";
        string sha = FakeHub.Sha256(Tiny[file]);
        hub.Corrupt[sha] = true;

        var e = await Assert.ThrowsAsync<HubException>(() => Resolve(PublicRepo, Options(hub)));
        Assert.Equal(HubErrorKind.Integrity, e.Kind);
        Assert.Contains(file, e.Message);
        Assert.Contains(sha, e.Message);
        Assert.DoesNotContain(Blobs(), b => b.StartsWith(sha, StringComparison.Ordinal));
        Assert.DoesNotContain(file, SnapshotFiles());
        Assert.False(File.Exists(Path.Combine(RepoFolder(), "refs", "main")));

        hub.Corrupt.TryRemove(sha, out _);
        string folder = await Resolve(PublicRepo, Options(hub));
        Assert.Equal(Tiny[file], File.ReadAllBytes(Path.Combine(folder, file)));
    }

    [Fact]
    public async Task Only_the_pipeline_files_of_the_requested_variant_are_fetched()
    {
        var files = new Dictionary<string, byte[]>(Tiny)
        {
            ["README.md"] = "# tiny"u8.ToArray(),
            ["sd3_tiny_single_file.safetensors"] = [1, 2, 3],
            ["text_encoders/clip_g.safetensors"] = [4, 5, 6],
            ["transformer/diffusion_pytorch_model.bin"] = [7, 8],
            ["transformer/diffusion_pytorch_model.fp16.safetensors"] = [9, 10, 11],
            ["vae/diffusion_pytorch_model.fp16.bin"] = [12],
        };
        await using var hub = StartHub(files);
        await Resolve(PublicRepo, Options(hub));
        Assert.Equal(Tiny.Keys.Order(StringComparer.Ordinal), SnapshotFiles());

        string fp16 = Path.Combine(CacheDir, "fp16");
        var options = Options(hub) with { CacheDir = fp16, Variant = "fp16" };
        string folder = await Resolve(PublicRepo, options);
        var expected = Tiny.Keys.Where(k => k != "transformer/diffusion_pytorch_model.safetensors")
            .Append("transformer/diffusion_pytorch_model.fp16.safetensors").Order(StringComparer.Ordinal);
        var got = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(folder, f)).Order(StringComparer.Ordinal);
        Assert.Equal(expected, got);
        Assert.Equal(folder, await Resolve(PublicRepo, options with { Offline = true }));
    }

    [Fact]
    public async Task A_single_model_repo_such_as_a_ControlNet_is_fetched_from_its_root()
    {
        // A ControlNet / T2I-Adapter repo (lllyasviel/sd-controlnet-canny's layout): config.json and weights at the root.
        var files = new Dictionary<string, byte[]>
        {
            ["config.json"] = """{"_class_name": "ControlNetModel"}"""u8.ToArray(),
            ["diffusion_pytorch_model.safetensors"] = [1, 2, 3],
            ["diffusion_pytorch_model.fp16.safetensors"] = [4, 5],
            ["diffusion_pytorch_model.bin"] = [6],
            ["README.md"] = "# cn"u8.ToArray(),
            ["images/example.safetensors"] = [7],
        };
        await using var hub = StartHub(files);
        string folder = await Resolve(PublicRepo, Options(hub));
        Assert.Equal(["config.json", "diffusion_pytorch_model.safetensors"], SnapshotFiles());
        Assert.Equal(folder, await Resolve(PublicRepo, Options(hub) with { Offline = true }));

        var fp16 = Options(hub) with { CacheDir = Path.Combine(CacheDir, "fp16"), Variant = "fp16" };
        string half = await Resolve(PublicRepo, fp16);
        Assert.Equal(["config.json", "diffusion_pytorch_model.fp16.safetensors"],
            Directory.EnumerateFiles(half).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal(half, await Resolve(PublicRepo, fp16 with { Offline = true }));

        // A root with no safetensors weights, and a repo that is neither a pipeline nor a model, are clear errors.
        await using var pickle = StartHub(new Dictionary<string, byte[]> { ["config.json"] = "{}"u8.ToArray(), ["diffusion_pytorch_model.bin"] = [1] });
        var e = await Assert.ThrowsAsync<HubException>(() => Resolve(PublicRepo, Options(pickle) with { CacheDir = Path.Combine(CacheDir, "pickle") }));
        Assert.Equal(HubErrorKind.UnsupportedRepo, e.Kind);
        Assert.Contains("no safetensors weights", e.Message);
        await using var other = StartHub(new Dictionary<string, byte[]> { ["weights.safetensors"] = [1], ["README.md"] = [2] });
        e = await Assert.ThrowsAsync<HubException>(() => Resolve(PublicRepo, Options(other) with { CacheDir = Path.Combine(CacheDir, "other") }));
        Assert.Contains("neither model_index.json", e.Message);
    }

    [Fact]
    public async Task One_file_is_fetched_as_hf_hub_download_does()
    {
        var files = new Dictionary<string, byte[]>(Tiny) { ["loras/style.safetensors"] = [1, 2, 3, 4] };
        await using var hub = StartHub(files);
        Assert.True(HubFileReference.TryParse($"hf://{PublicRepo}/loras/style.safetensors", out var file));
        string path = await ModelSource.ResolveFileAsync(file!, Options(hub)).WaitAsync(Bound);
        Assert.Equal(Path.Combine(Snapshot(), "loras", "style.safetensors"), path);
        Assert.Equal([1, 2, 3, 4], File.ReadAllBytes(path));
        Assert.Equal(["loras/style.safetensors"], SnapshotFiles()); // that file only, not the pipeline
        Assert.Equal(path, await ModelSource.ResolveFileAsync(file!, Options(hub) with { Offline = true }).WaitAsync(Bound));

        Assert.True(HubFileReference.TryParse($"https://huggingface.co/{PublicRepo}/blob/main/missing.safetensors", out var missing));
        var e = await Assert.ThrowsAsync<HubException>(() => ModelSource.ResolveFileAsync(missing!, Options(hub)).WaitAsync(Bound));
        Assert.Equal(HubErrorKind.EntryNotFound, e.Kind);
        Assert.Contains("has no file 'missing.safetensors'", e.Message);
        var offline = await Assert.ThrowsAsync<HubException>(() => ModelSource.ResolveFileAsync(missing!, Options(hub) with { Offline = true }).WaitAsync(Bound));
        Assert.Equal(HubErrorKind.NotCached, offline.Kind);
    }

    [Fact]
    public async Task A_model_folder_inside_a_repo_is_fetched_with_its_config_and_weights()
    {
        // h94/IP-Adapter's layout: adapter files and the CLIP image encoder folder under models/.
        var files = new Dictionary<string, byte[]>
        {
            ["models/ip-adapter_sd15.safetensors"] = [1],
            ["models/image_encoder/config.json"] = """{"model_type": "clip_vision_model"}"""u8.ToArray(),
            ["models/image_encoder/model.safetensors"] = [2, 3],
            ["models/image_encoder/pytorch_model.bin"] = [4],
            ["models/image_encoder/extra/more.safetensors"] = [5],
            ["README.md"] = [6],
        };
        await using var hub = StartHub(files);
        Assert.True(HubFileReference.TryParse($"hf://{PublicRepo}/models/image_encoder", out var folder));
        string path = await ModelSource.ResolveSubfolderAsync(folder!, Options(hub)).WaitAsync(Bound);
        Assert.Equal(Path.Combine(Snapshot(), "models", "image_encoder"), path);
        Assert.Equal(["models/image_encoder/config.json", "models/image_encoder/model.safetensors"], SnapshotFiles());
        Assert.Equal(path, await ModelSource.ResolveSubfolderAsync(folder!, Options(hub) with { Offline = true }).WaitAsync(Bound));

        Assert.True(HubFileReference.TryParse($"hf://{PublicRepo}/models", out var notModel));
        var e = await Assert.ThrowsAsync<HubException>(() => ModelSource.ResolveSubfolderAsync(notModel!, Options(hub)).WaitAsync(Bound));
        Assert.Contains("has no config.json in models/", e.Message);
    }

    [Fact]
    public void An_IP_Adapter_hub_file_takes_the_image_encoder_beside_it_in_its_repo()
    {
        var settings = new DiffusersSharp.Cli.Commands.GenerateSettings { IpAdapter = "hf://h94/IP-Adapter/models/ip-adapter_sd15.safetensors" };
        Assert.Equal("hf://h94/IP-Adapter/models/image_encoder", settings.IpAdapterImageEncoderFolder);
        Assert.Equal("hf://h94/IP-Adapter/image_encoder",
            new DiffusersSharp.Cli.Commands.GenerateSettings { IpAdapter = "hf://h94/IP-Adapter/ip.safetensors" }.IpAdapterImageEncoderFolder);
    }

    [Theory]
    [InlineData("hf://org/name/emb.safetensors", "hf://org/name/emb.safetensors", null)]
    [InlineData("hf://org/name/emb.safetensors:<cat-toy>", "hf://org/name/emb.safetensors", "<cat-toy>")]
    [InlineData("https://huggingface.co/org/name/blob/main/emb.safetensors:tok", "https://huggingface.co/org/name/blob/main/emb.safetensors", "tok")]
    public void A_textual_inversion_hub_file_may_carry_a_token(string value, string file, string? token) =>
        Assert.Equal((file, token), DiffusersSharp.Cli.Commands.GenerateSettings.ParseTextualInversion(value));

    [Theory]
    [InlineData("hf://org/name/lora.safetensors", "org/name", "lora.safetensors", null)]
    [InlineData("hf://org/name/sub/dir/x.safetensors", "org/name", "sub/dir/x.safetensors", null)]
    [InlineData("https://huggingface.co/org/name/blob/main/x.safetensors", "org/name", "x.safetensors", "main")]
    [InlineData("https://huggingface.co/org/name/resolve/v1.0/models/x.safetensors?download=true", "org/name", "models/x.safetensors", "v1.0")]
    [InlineData("loras/x.safetensors", null, null, null)]
    [InlineData("hf://org/name/../x.safetensors", null, null, null)]
    [InlineData("https://example.com/org/name/blob/main/x.safetensors", null, null, null)]
    public void Hub_file_references_are_read_and_everything_else_is_a_local_path(string text, string? repo, string? path, string? revision)
    {
        bool parsed = HubFileReference.TryParse(text, out var file);
        Assert.Equal(repo is not null, parsed);
        if (parsed) Assert.Equal(new HubFileReference(repo!, path!, revision), file);
    }

    /// <summary>Collects reports on the reporting thread (Progress&lt;T&gt; would post them later).</summary>
    private sealed class SyncProgress(List<DownloadProgress> reports) : IProgress<DownloadProgress>
    {
        public void Report(DownloadProgress value) { lock (reports) reports.Add(value); }
    }
}
