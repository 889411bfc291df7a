using DiffusersSharp.IO;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Support;

/// <summary>Paths of the parity fixtures (diffusers' own outputs) copied into tests/DiffusersSharp.Tests/Fixtures.</summary>
public static class Fixtures
{
    /// <summary>The Fixtures folder, found by walking up from the test assembly.</summary>
    public static string Root { get; } = FindRoot();

    /// <summary>The tiny SD3 pipeline folder (random weights, diffusers layout).</summary>
    public static string TinySd3Model => Path("tiny-sd3/model");

    /// <summary>A path under the Fixtures folder.</summary>
    public static string Path(string relative) => System.IO.Path.Combine(Root, relative);

    /// <summary>Reads tensors of an expected.safetensors file as float32 on the CPU.</summary>
    public static Dictionary<string, Tensor> Expected(string relative = "tiny-sd3/expected.safetensors")
    {
        using var file = SafetensorsFile.Open(Path(relative));
        return file.Tensors.Keys.ToDictionary(k => k, k => file.Read(k).clone());
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = System.IO.Path.Combine(dir.FullName, "tests", "DiffusersSharp.Tests", "Fixtures");
            if (Directory.Exists(candidate)) return candidate;
        }
        throw new DirectoryNotFoundException("tests/DiffusersSharp.Tests/Fixtures not found above " + AppContext.BaseDirectory);
    }
}
