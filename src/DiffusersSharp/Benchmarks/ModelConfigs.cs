using DiffusersSharp.IO;

namespace DiffusersSharp.Benchmarks;

/// <summary>
/// The configs of one pipeline family's models, for building them with random weights (no weight files needed):
/// <see cref="PipelineConfigs"/> (SD3), <see cref="UNetPipelineConfigs"/> (SD 1.x / 2.x, SDXL) or
/// <see cref="FluxPipelineConfigs"/> (Flux.1).
/// </summary>
/// <param name="Name">The preset name or the folder the configs came from.</param>
public abstract record ModelConfigs(string Name)
{
    /// <summary>The diffusers pipeline class these models make (model_index.json's <c>_class_name</c>).</summary>
    public abstract string PipelineClass { get; }

    /// <summary>The presets <see cref="Resolve"/> knows, in the order error messages list them.</summary>
    public static IReadOnlyList<string> Presets { get; } =
        [PipelineConfigs.Sd35Medium, UNetPipelineConfigs.SdxlBase, UNetPipelineConfigs.Sd15, FluxPipelineConfigs.Schnell, FluxPipelineConfigs.Dev];

    /// <summary>
    /// A preset name (see <see cref="Presets"/>, case-insensitive) or a diffusers pipeline folder of any supported family
    /// (told apart by model_index.json) whose config files are read (its weights are not).
    /// </summary>
    /// <exception cref="ArgumentException">Neither a known preset nor an existing folder, or a folder of another pipeline.</exception>
    public static ModelConfigs Resolve(string presetOrFolder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(presetOrFolder);
        string name = presetOrFolder.Trim().ToLowerInvariant();
        if (name == PipelineConfigs.Sd35Medium) return PipelineConfigs.StableDiffusion35Medium;
        if (name == UNetPipelineConfigs.SdxlBase) return UNetPipelineConfigs.StableDiffusionXLBase;
        if (name == UNetPipelineConfigs.Sd15) return UNetPipelineConfigs.StableDiffusion15;
        if (name == FluxPipelineConfigs.Schnell) return FluxPipelineConfigs.FluxSchnell;
        if (name == FluxPipelineConfigs.Dev) return FluxPipelineConfigs.FluxDev;
        if (!Directory.Exists(presetOrFolder))
            throw new ArgumentException($"Unknown random-weights preset '{presetOrFolder}': expected one of {string.Join(", ", Presets)}, or a pipeline folder whose configs to use.");
        return BenchmarkFamilies.Of(ModelIndex.Read(presetOrFolder).ClassName) switch
        {
            BenchmarkFamily.StableDiffusion or BenchmarkFamily.StableDiffusionXL => UNetPipelineConfigs.FromFolder(presetOrFolder),
            BenchmarkFamily.Flux => FluxPipelineConfigs.FromFolder(presetOrFolder),
            _ => PipelineConfigs.Resolve(presetOrFolder),
        };
    }
}
