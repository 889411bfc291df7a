using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Pipelines.StableDiffusion;

namespace DiffusersSharp.Benchmarks;

/// <summary>The pipeline families <see cref="PipelineBenchmark"/> measures.</summary>
public enum BenchmarkFamily
{
    /// <summary>Stable Diffusion 3 / 3.5 (MMDiT, CLIP-L, CLIP-G, T5).</summary>
    StableDiffusion3,
    /// <summary>Stable Diffusion 1.x / 2.x (UNet, one CLIP).</summary>
    StableDiffusion,
    /// <summary>SDXL (UNet with text_time conditioning, CLIP-L and OpenCLIP-G).</summary>
    StableDiffusionXL,
    /// <summary>Flux.1 (Flux transformer, CLIP-L, T5).</summary>
    Flux,
}

/// <summary>Which family a pipeline class is, as the CLI's model loading tells them apart.</summary>
public static class BenchmarkFamilies
{
    /// <summary>
    /// The family of a model_index.json <c>_class_name</c>: the UNet pipelines (SDXL when the name says XL), Flux, and
    /// otherwise SD3 (whose loader checks the folder).
    /// </summary>
    /// <exception cref="ArgumentException">A Flux Fill or Kontext model: the bench measures text-to-image only.</exception>
    public static BenchmarkFamily Of(string pipelineClass) =>
        pipelineClass is FluxComponents.FillPipelineClass or FluxComponents.KontextPipelineClass
            ? throw new ArgumentException($"bench measures text-to-image pipelines; a {pipelineClass} (it needs an input image) is not benchmarked.")
        : StableDiffusionComponents.IsSupportedPipeline(pipelineClass)
            ? pipelineClass.Contains("XL", StringComparison.Ordinal) ? BenchmarkFamily.StableDiffusionXL : BenchmarkFamily.StableDiffusion
            : FluxComponents.IsSupportedPipeline(pipelineClass) ? BenchmarkFamily.Flux
            : BenchmarkFamily.StableDiffusion3;
}
