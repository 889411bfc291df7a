using DiffusersSharp.Images;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.QwenImage;

/// <summary>A Qwen-Image pipeline result: images (output type Image) or a tensor (Numpy, Tensor, Latent). Owns the tensor.</summary>
/// <param name="Images">The 8-bit RGB images, one per prompt × image per prompt.</param>
/// <param name="Tensor">NHWC [0,1] (Numpy), NCHW [0,1] (Tensor) or the final packed latents [B, tokens, 4·z_dim] (Latent).</param>
public sealed record QwenImageOutput(IReadOnlyList<ImageBuffer>? Images, Tensor? Tensor) : IDisposable
{
    /// <summary>Frees the tensor.</summary>
    public void Dispose() => Tensor?.Dispose();
}
