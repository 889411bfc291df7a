using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion3;

/// <summary>
/// Image-to-image with Stable Diffusion 3 / 3.5 (diffusers' <c>StableDiffusion3Img2ImgPipeline</c>): the image is encoded,
/// noised to the timestep that <c>strength</c> selects, and denoised from there.
/// </summary>
public sealed class StableDiffusion3Img2ImgPipeline : StableDiffusion3PipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    public StableDiffusion3Img2ImgPipeline(StableDiffusion3Components components) : base(components) { }

    /// <summary>Loads a diffusers pipeline folder.</summary>
    public static StableDiffusion3Img2ImgPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusion3Components.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>An image-to-image pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static StableDiffusion3Img2ImgPipeline FromPipe(StableDiffusion3PipelineBase other) => new(other.Components);

    /// <inheritdoc />
    protected override int DefaultSteps => 50;

    /// <summary>Checks strength and the image, before any compute.</summary>
    internal static void CheckImageInputs(StableDiffusion3Img2ImgRequest request)
    {
        Strength.Check(request.Strength);
        if (request.Image is null && request.Latents is null)
            throw new ArgumentException("image is required.");
    }

    /// <summary>Generates images from <see cref="StableDiffusion3Img2ImgRequest.Image"/> (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute), or a PAG request (for
    /// <see cref="StableDiffusion3PAGImg2ImgPipeline"/>).</exception>
    public StableDiffusion3Output Generate(StableDiffusion3Img2ImgRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request is StableDiffusion3PAGImg2ImgRequest)
            throw new ArgumentException("A perturbed-attention guidance request is for StableDiffusion3PAGImg2ImgPipeline.", nameof(request));
        return ImageToImage(request, () => null, null, progress, cancellationToken);
    }
}
