using DiffusersSharp.Images;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines;

/// <summary>
/// diffusers' <c>ImagePipelineOutput</c>, the result of the pipelines that return nothing else (Lumina-Image 2.0,
/// AuraFlow): images (output type Image) or a tensor (Numpy, Tensor, Latent). Owns the tensor.
/// </summary>
/// <param name="Images">The 8-bit RGB images, one per prompt x image per prompt.</param>
/// <param name="Tensor">NHWC [0,1] (Numpy), NCHW [0,1] (Tensor) or the final latents (Latent).</param>
public sealed record ImagePipelineOutput(IReadOnlyList<ImageBuffer>? Images, Tensor? Tensor) : IDisposable
{
    /// <summary>Frees the tensor.</summary>
    public void Dispose() => Tensor?.Dispose();
}
