namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>
/// Instruction-based image editing with Stable Diffusion 1.x (diffusers' <c>StableDiffusionInstructPix2PixPipeline</c>,
/// e.g. timbrooks/instruct-pix2pix): the UNet takes the noisy latents and the image's latents side by side (in_channels
/// 8; the image encoded to its posterior mode, unscaled), and guidance runs three passes (instruction and image, image
/// alone, neither).
/// </summary>
public sealed class StableDiffusionInstructPix2PixPipeline : StableDiffusionPipelineBase
{
    /// <summary>model_index.json's class of InstructPix2Pix models.</summary>
    public const string PipelineClass = "StableDiffusionInstructPix2PixPipeline";

    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    /// <exception cref="ArgumentException">The components are of the other model family.</exception>
    public StableDiffusionInstructPix2PixPipeline(StableDiffusionComponents components) : base(components, xl: false) { }

    /// <summary>Loads a diffusers pipeline folder or hub repo id (e.g. timbrooks/instruct-pix2pix).</summary>
    public static StableDiffusionInstructPix2PixPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>A pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static StableDiffusionInstructPix2PixPipeline FromPipe(StableDiffusionPipelineBase other) => new(other.Components);

    /// <summary>Edits <see cref="StableDiffusionInstructPix2PixRequest.Image"/> as the prompt says (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters, or a UNet that does not take the image's latents (checked before any compute).</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusionPipelineOutput Generate(StableDiffusionInstructPix2PixRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default) => Run(request, typeof(StableDiffusionInstructPix2PixRequest), progress, cancellationToken);
}
