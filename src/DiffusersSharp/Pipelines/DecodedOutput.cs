using DiffusersSharp.Images;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines;

/// <summary>The VAE's decoded image in the form the caller asked for (diffusers' <c>image_processor.postprocess</c>).</summary>
internal static class DecodedOutput
{
    /// <summary>
    /// Images for <see cref="OutputType.Image"/>, else a tensor that outlives the caller's dispose scope: NHWC in [0, 1]
    /// (Numpy) or NCHW in [0, 1] (Tensor). Latents never reach here.
    /// </summary>
    public static (IReadOnlyList<ImageBuffer>? Images, Tensor? Tensor) From(Tensor decoded, OutputType outputType, VaeImageProcessor processor) => outputType switch
    {
        OutputType.Tensor => (null, (decoded * 0.5 + 0.5).clamp(0, 1).DetachFromDisposeScope()),
        OutputType.Numpy => (null, processor.Postprocess(decoded).DetachFromDisposeScope()),
        OutputType.Image => (processor.PostprocessToImages(decoded), null),
        _ => throw new ArgumentOutOfRangeException(nameof(outputType), outputType, "Latents are returned before decoding."),
    };
}
