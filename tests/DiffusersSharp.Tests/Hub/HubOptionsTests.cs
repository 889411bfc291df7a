using DiffusersSharp.Hub;

namespace DiffusersSharp.Tests.Hub;

public sealed class HubOptionsTests
{
    private static HubOptions With(params (string Name, string Value)[] env) =>
        new() { Environment = name => env.FirstOrDefault(e => e.Name == name).Value };

    [Fact]
    public void Defaults_follow_huggingface_hub()
    {
        var none = With();
        Assert.Equal("https://huggingface.co", none.EffectiveEndpoint);
        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        Assert.Equal(Path.Combine(home, ".cache", "huggingface", "hub"), none.EffectiveCacheDir);
        Assert.False(none.EffectiveOffline);
        Assert.Equal("main", none.Revision);

        var hfHome = With(("HF_HOME", "/data/hf"), ("HF_ENDPOINT", "https://mirror.example/"), ("HF_HUB_OFFLINE", "1"));
        Assert.Equal("/data/hf/hub", hfHome.EffectiveCacheDir);
        Assert.Equal("https://mirror.example", hfHome.EffectiveEndpoint);
        Assert.True(hfHome.EffectiveOffline);
        Assert.False((hfHome with { Offline = false }).EffectiveOffline);

        var hubCache = With(("HF_HOME", "/data/hf"), ("HF_HUB_CACHE", "/fast/cache"));
        Assert.Equal("/fast/cache", hubCache.EffectiveCacheDir);
        Assert.Equal("/explicit", (hubCache with { CacheDir = "/explicit" }).EffectiveCacheDir);
    }

    [Fact]
    public void Token_path_variable_and_masking()
    {
        string dir = Path.Combine(Path.GetTempPath(), "ds-hub-token-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string file = Path.Combine(dir, "my-token");
            File.WriteAllText(file, "  hf_from_token_path \n");
            var options = With(("HF_TOKEN_PATH", file));
            Assert.Equal("hf_from_token_path", options.ResolveToken());
            Assert.Null(With(("HF_HOME", dir)).ResolveToken());

            var secret = new HubOptions { Token = "hf_super_secret" };
            Assert.DoesNotContain("hf_super_secret", secret.ToString());
            Assert.Contains("***", secret.ToString());
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Theory]
    [InlineData("stabilityai/stable-diffusion-3.5-medium", true)]
    [InlineData("org/name_v1.0", true)]
    [InlineData("name-only", false)]
    [InlineData("a/b/c", false)]
    [InlineData("../etc", false)]
    [InlineData("org/..", false)]
    [InlineData("org--x/name", false)]
    [InlineData("/abs/path", false)]
    public void Repo_ids(string text, bool valid) => Assert.Equal(valid, ModelSource.IsRepoId(text));
}
