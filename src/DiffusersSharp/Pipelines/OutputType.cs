namespace DiffusersSharp.Pipelines;

/// <summary>What a pipeline returns (diffusers' <c>output_type</c>).</summary>
public enum OutputType
{
    /// <summary>8-bit RGB images ("pil").</summary>
    Image,
    /// <summary>A float tensor NHWC in [0, 1] on the CPU ("np").</summary>
    Numpy,
    /// <summary>A float tensor NCHW in [0, 1] ("pt").</summary>
    Tensor,
    /// <summary>The final latents in scheduler space, not decoded ("latent").</summary>
    Latent,
}
