using DiffusersSharp.Images;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux2;

/// <summary>A FLUX.2 pipeline result (diffusers' <c>Flux2PipelineOutput</c>): images (output type Image) or a tensor (Numpy, Tensor, Latent). Owns the tensor.</summary>
/// <param name="Images">The 8-bit RGB images, one per prompt x image per prompt.</param>
/// <param name="Tensor">NHWC [0,1] (Numpy), NCHW [0,1] (Tensor) or the final latents, de-normalised and unpatchified [B, latent_channels, H/8, W/8] (Latent).</param>
public sealed record Flux2Output(IReadOnlyList<ImageBuffer>? Images, Tensor? Tensor) : IDisposable
{
    /// <summary>Frees the tensor.</summary>
    public void Dispose() => Tensor?.Dispose();
}
