using DiffusersSharp.Pipelines.StableDiffusion;

namespace DiffusersSharp.Pipelines.StableDiffusionXL;

/// <summary>
/// Instruction-based image editing with SDXL (diffusers' <c>StableDiffusionXLInstructPix2PixPipeline</c>, e.g.
/// diffusers/sdxl-instructpix2pix-768; with <see cref="IsCosXLEdit"/> stabilityai/cosxl's edit model): the UNet takes the
/// noisy latents and the image's latents side by side (in_channels 8; the image resized to the output size and encoded to
/// its posterior mode), and guidance runs three passes (instruction and image, image alone, neither), as SD 1.x's
/// <see cref="StableDiffusionInstructPix2PixPipeline"/> does, with SDXL's two text encoders, pooled embeddings and
/// micro-conditioning.
/// </summary>
public sealed class StableDiffusionXLInstructPix2PixPipeline : StableDiffusionPipelineBase
{
    /// <summary>model_index.json's class of SDXL InstructPix2Pix models.</summary>
    public const string PipelineClass = "StableDiffusionXLInstructPix2PixPipeline";

    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    /// <param name="components">SDXL components with an 8-channel UNet.</param>
    /// <param name="isCosXLEdit">diffusers' <c>is_cosxl_edit</c>: scale the image latents by the VAE's scaling factor, as
    /// CosXL Edit (stabilityai/cosxl) was trained; null takes <see cref="StableDiffusionComponents.IsCosXLEdit"/>
    /// (model_index.json's).</param>
    /// <exception cref="ArgumentException">The components are of the other model family.</exception>
    public StableDiffusionXLInstructPix2PixPipeline(StableDiffusionComponents components, bool? isCosXLEdit = null) : base(components, xl: true) =>
        IsCosXLEdit = isCosXLEdit ?? components.IsCosXLEdit;

    /// <summary>diffusers' <c>is_cosxl_edit</c>: the image latents are multiplied by the VAE's scaling factor.</summary>
    public bool IsCosXLEdit { get; }

    private protected override bool ScalesInstructPix2PixImageLatents => IsCosXLEdit;

    /// <summary>Loads a diffusers pipeline folder or hub repo id (e.g. diffusers/sdxl-instructpix2pix-768).</summary>
    /// <param name="model">The folder or hub repo id.</param>
    /// <param name="options">Load options.</param>
    /// <param name="isCosXLEdit">diffusers' <c>is_cosxl_edit</c> keyword; null takes model_index.json's
    /// <c>is_cosxl_edit</c> (false without one), as diffusers' <c>from_pretrained</c> does.</param>
    /// <param name="cancellationToken">Cancels the load.</param>
    public static StableDiffusionXLInstructPix2PixPipeline FromPretrained(string model, PipelineLoadOptions? options = null, bool? isCosXLEdit = null,
        CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new(components, isCosXLEdit); // the pipeline's own reference keeps them
    }

    /// <summary>A pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    /// <param name="other">The pipeline whose components to share.</param>
    /// <param name="isCosXLEdit">diffusers' <c>is_cosxl_edit</c> (default: <paramref name="other"/>'s when it is an SDXL
    /// InstructPix2Pix pipeline, else the components' model_index.json's).</param>
    public static StableDiffusionXLInstructPix2PixPipeline FromPipe(StableDiffusionPipelineBase other, bool? isCosXLEdit = null)
    {
        ArgumentNullException.ThrowIfNull(other);
        return new(other.Components, isCosXLEdit ?? (other as StableDiffusionXLInstructPix2PixPipeline)?.IsCosXLEdit);
    }

    /// <summary>Edits <see cref="StableDiffusionInstructPix2PixRequest.Image"/> as the prompt says (diffusers' <c>__call__</c>):
    /// 100 steps, guidance 5.0 and image guidance 1.5 by default; the output is height x width (default the model's size,
    /// 1024 for SDXL, 768 for diffusers/sdxl-instructpix2pix-768), the image resized to it.</summary>
    /// <exception cref="ArgumentException">Invalid parameters, or a UNet that does not take the image's latents (checked before any compute).</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusionPipelineOutput Generate(StableDiffusionInstructPix2PixRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default) => Run(request, typeof(StableDiffusionInstructPix2PixRequest), progress, cancellationToken);
}
