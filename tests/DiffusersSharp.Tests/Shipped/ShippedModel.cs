using DiffusersSharp.Cli;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion3;

namespace DiffusersSharp.Tests.Shipped;

/// <summary>The shapes model committed in models/shapes-sd3, loaded once for the tests of this folder.</summary>
public sealed class ShippedModel : IDisposable
{
    private readonly Lazy<StableDiffusion3Components> _components = new(() =>
        StableDiffusion3Components.FromPretrained(Folder, new PipelineLoadOptions()));

    /// <summary>models/shapes-sd3 in this repository.</summary>
    public static string Folder { get; } = FindFolder();

    /// <summary>The loaded model (float32 on the CPU, the `generate` defaults).</summary>
    public StableDiffusion3Components Components => _components.Value;

    private static string FindFolder()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "DiffusersSharp.sln"))) return Path.Combine(dir.FullName, BundledModel.RelativePath);
        throw new DirectoryNotFoundException("the repository root (DiffusersSharp.sln) was not found above the test assembly.");
    }

    public void Dispose()
    {
        if (_components.IsValueCreated) _components.Value.Dispose();
    }
}
