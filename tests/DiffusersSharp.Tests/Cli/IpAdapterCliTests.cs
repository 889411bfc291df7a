using DiffusersSharp.Images;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary><c>generate --ip-adapter</c>: option checks before loading, and a run on tiny-sd15 with the fixture's adapter
/// and a tiny random image encoder (a wiring test; the adapter's numbers are checked by IpAdapterParityTests).</summary>
public sealed class IpAdapterCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ipadapter-cli").FullName;
    private static readonly string Adapter = Fixtures.Path("local-diffusers/ip-adapter/sd15/ip-adapter.safetensors");
    private static readonly string Image = Fixtures.Path("tiny-sd15/init_image.png");

    public void Dispose() => Directory.Delete(_dir, true);

    private string Out(string name = "out.png") => Path.Combine(_dir, name);

    [Fact]
    public void OptionsAreCheckedBeforeLoading()
    {
        string encoder = TinyImageEncoder.Write(_dir);
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.TinySd3Model, "--prompt", "a", "--ip-adapter", Adapter,
            "--ip-adapter-image", Image, "--ip-adapter-image-encoder", encoder, "--steps", "1", "--output", Out());
        Assert.Equal(2, code);
        Assert.Contains("--ip-adapter applies to SD 1.x / 2.x, SDXL and FLUX.1 models", stderr);
        (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.Path("tiny-sd15/model"), "--prompt", "a", "--ip-adapter-image", Image, "--output", Out());
        Assert.Equal(2, code);
        Assert.Contains("--ip-adapter-image needs --ip-adapter", stderr);
        (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.Path("tiny-sd15/model"), "--prompt", "a", "--ip-adapter", Adapter, "--ip-adapter-image", Image, "--output", Out());
        Assert.Equal(2, code);
        Assert.Contains("needs a CLIP image encoder", stderr);
        (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.Path("tiny-sd15/model"), "--prompt", "a", "--ip-adapter", Adapter,
            "--ip-adapter-image", Image, "--ip-adapter-image-encoder", encoder, "--ip-adapter-scale", "x", "--output", Out());
        Assert.Equal(2, code);
        Assert.Contains("--ip-adapter-scale must be a finite number", stderr);
    }

    [Fact]
    public void GenerateWithAnIpAdapterRuns()
    {
        string encoder = TinyImageEncoder.Write(_dir);
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.Path("tiny-sd15/model"), "--prompt", "a cat", "--ip-adapter", Adapter,
            "--ip-adapter-image", Image, "--ip-adapter-image-encoder", encoder, "--ip-adapter-scale", "0.7", "--steps", "2",
            "--width", "64", "--height", "64", "--seed", "3", "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Contains("loaded IP-Adapter", stderr);
        (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.Path("tiny-sd15/model"), "--prompt", "a cat", "--steps", "2",
            "--width", "64", "--height", "64", "--seed", "3", "--output", Out("plain.png"));
        Assert.True(code == 0, stderr);
        Assert.NotEqual(ImageFile.Load(Out()).Pixels, ImageFile.Load(Out("plain.png")).Pixels);
    }
}
