using DiffusersSharp.Runtime;
using DiffusersSharp.Tests.Cli;

namespace DiffusersSharp.Tests.Diagnostics;

public class FullSizeCliTests
{
    [Fact]
    public void CudaUnavailableFailsWithTheReason()
    {
        if (TorchDevices.IsCudaAvailable()) return; // on a GPU machine this would run the real check (docs/gpu-checks.md)
        var (code, stdout, stderr) = CliRunner.Run("check-full-size", "--device", "cuda", "--component", "vae");
        Assert.Equal(1, code);
        Assert.Equal("", stdout);
        Assert.Contains("CUDA is not available", stderr);
    }

    [Theory]
    [InlineData("--device", "cpu", "CUDA's default generator")]
    [InlineData("--component", "unet", "transformer, vae or all")]
    [InlineData("--runs", "-1", "--runs")]
    [InlineData("--max-relative-l2", "0", "--max-relative-l2")]
    [InlineData("--fixture", "/nonexistent/full-size", "not found")]
    public void InvalidOptionsExitWith2BeforeAnyWork(string option, string value, string message)
    {
        var (code, stdout, stderr) = CliRunner.Run("check-full-size", option, value);
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Contains(message, stderr);
    }
}
