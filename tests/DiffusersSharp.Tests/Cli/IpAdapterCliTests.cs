using DiffusersSharp.Images;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary><c>generate --ip-adapter</c>: option checks before loading, a run on tiny-sd15 with the fixture's adapter and a
/// tiny random image encoder, and one on tiny-sd3 with the SD3 fixture's adapter and SigLIP encoder (wiring tests; the
/// adapters' numbers are checked by IpAdapterParityTests and StableDiffusion3IpAdapterParityTests).</summary>
public sealed class IpAdapterCliTests() : CliTempDirectory("ipadapter-cli")
{
    private static readonly string Adapter = Fixtures.Path("local-diffusers/ip-adapter/sd15/ip-adapter.safetensors");
    private static readonly string Image = Fixtures.Path("tiny-sd15/init_image.png");

    [Fact]
    public void OptionsAreCheckedBeforeLoading()
    {
        string encoder = TinyImageEncoder.Write(Dir);
        string fill = Path.Combine(Dir, "fill");
        TinyFluxPipelineFolder.Write(fill, pipelineClass: "FluxFillPipeline", inChannels: 384);
        var (code, _, stderr) = CliRunner.Run("inpaint", "--model", fill, "--prompt", "a", "--ip-adapter", Adapter, "--image", Image,
            "--mask", Image, "--ip-adapter-image", Image, "--ip-adapter-image-encoder", encoder, "--steps", "1", "--output", Out());
        Assert.Equal(2, code);
        Assert.Contains("--ip-adapter does not apply to FLUX.1-Fill", stderr);
        (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.Path("tiny-sd15/model"), "--prompt", "a", "--ip-adapter-image", Image, "--output", Out());
        Assert.Equal(2, code);
        Assert.Contains("--ip-adapter-image needs --ip-adapter", stderr);
        (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.Path("tiny-sd15/model"), "--prompt", "a", "--ip-adapter", Adapter, "--ip-adapter-image", Image, "--output", Out());
        Assert.Equal(2, code);
        Assert.Contains("needs an image encoder", stderr);
        (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.Path("tiny-sd15/model"), "--prompt", "a", "--ip-adapter", Adapter,
            "--ip-adapter-image", Image, "--ip-adapter-image-encoder", encoder, "--ip-adapter-scale", "x", "--output", Out());
        Assert.Equal(2, code);
        Assert.Contains("--ip-adapter-scale must be a finite number", stderr);
    }

    [Fact]
    public void GenerateWithAnIpAdapterRuns()
    {
        string encoder = TinyImageEncoder.Write(Dir);
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

    [Fact]
    public void GenerateWithAnSd3IpAdapterRuns()
    {
        // The SD3 adapter's image features are 32 wide: local-diffusers/siglip-vision's image_encoder.
        string adapter = Fixtures.Path("local-diffusers/sd3-ip-adapter/ip-adapter.safetensors");
        string encoder = Fixtures.Path("local-diffusers/siglip-vision/image_encoder");
        string[] Args(string output, params string[] more) => ["generate", "--model", Fixtures.TinySd3Model, "--prompt", "a cat", "--steps", "2",
            "--width", "64", "--height", "64", "--seed", "3", "--output", output, .. more];
        var (code, _, stderr) = CliRunner.Run(Args(Out(), "--ip-adapter", adapter, "--ip-adapter-image", Fixtures.Path("tiny-sd3/init_image.png"),
            "--ip-adapter-image-encoder", encoder, "--ip-adapter-scale", "0.8"));
        Assert.True(code == 0, stderr);
        Assert.Contains("loaded IP-Adapter", stderr);
        (code, _, stderr) = CliRunner.Run(Args(Out("plain.png")));
        Assert.True(code == 0, stderr);
        Assert.NotEqual(ImageFile.Load(Out()).Pixels, ImageFile.Load(Out("plain.png")).Pixels);
        // Without an encoder beside the file or named, the SD3 adapter is refused before loading.
        string lone = Path.Combine(Dir, "lone", "ip-adapter.safetensors");
        Directory.CreateDirectory(Path.GetDirectoryName(lone)!);
        File.Copy(adapter, lone);
        (code, _, stderr) = CliRunner.Run(Args(Out("x.png"), "--ip-adapter", lone, "--ip-adapter-image", Fixtures.Path("tiny-sd3/init_image.png")));
        Assert.Equal(2, code);
        Assert.Contains("google/siglip-so400m-patch14-384", stderr);
    }
}
