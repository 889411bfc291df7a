using DiffusersSharp.Cli;

namespace DiffusersSharp.Tests.Hub;

public sealed class DownloadCommandTests : HubTestBase
{
    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var task = Task.Run(() => CliApp.Run(args, stdout, stderr));
        Assert.True(task.Wait(TimeSpan.FromSeconds(60)), "the download command did not finish in time");
        return (task.Result, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public async Task Download_prints_the_snapshot_folder_and_reports_progress_on_stderr()
    {
        await using var hub = StartHub();
        var (code, stdout, stderr) = Run("download", GatedRepo, "--token", FakeHub.GrantedToken, "--endpoint", hub.Endpoint, "--cache-dir", CacheDir);
        Assert.Equal(0, code);
        Assert.Equal(Snapshot(GatedRepo), stdout.Trim());
        Assert.Contains($"[{Tiny.Count}/{Tiny.Count}]", stderr);
        Assert.DoesNotContain(FakeHub.GrantedToken, stdout + stderr);
    }

    [Fact]
    public async Task Download_of_one_file_prints_its_path()
    {
        await using var hub = StartHub(new Dictionary<string, byte[]>(Tiny) { ["loras/a.safetensors"] = [9, 8, 7] });
        var (code, stdout, stderr) = Run("download", $"hf://{PublicRepo}/loras/a.safetensors", "--endpoint", hub.Endpoint, "--cache-dir", CacheDir);
        Assert.True(code == 0, stderr);
        Assert.Equal(Path.Combine(Snapshot(), "loras", "a.safetensors"), stdout.Trim());
        Assert.Equal([9, 8, 7], File.ReadAllBytes(stdout.Trim()));
    }

    [Fact]
    public async Task Gated_and_missing_repos_exit_with_invalid_input_and_a_clear_message()
    {
        await using var hub = StartHub();
        var gated = Run("download", GatedRepo, "--token", FakeHub.NotGrantedToken, "--endpoint", hub.Endpoint, "--cache-dir", CacheDir);
        Assert.Equal(2, gated.Code);
        Assert.Equal("", gated.Out);
        Assert.Contains("licence", gated.Err);
        Assert.DoesNotContain(FakeHub.NotGrantedToken, gated.Err);

        var missing = Run("download", "test-org/absent", "--token", FakeHub.GrantedToken, "--endpoint", hub.Endpoint, "--cache-dir", CacheDir);
        Assert.Equal(2, missing.Code);
        Assert.Contains("not found", missing.Err);
    }

    [Fact]
    public async Task A_network_failure_exits_with_1()
    {
        await using var hub = StartHub();
        string sha = FakeHub.Sha256(Tiny["vae/diffusion_pytorch_model.safetensors"]);
        hub.Corrupt[sha] = true;
        var corrupt = Run("download", PublicRepo, "--endpoint", hub.Endpoint, "--cache-dir", CacheDir);
        Assert.Equal(1, corrupt.Code);
        Assert.Contains("sha256", corrupt.Err);
    }
}
