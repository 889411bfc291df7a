namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>
/// Image-to-image with a latent consistency model (diffusers' <c>LatentConsistencyModelImg2ImgPipeline</c>): the image
/// is encoded and noised to the first timestep, which the LCMScheduler picks from the first
/// <c>int(original_inference_steps x strength)</c> entries of its distillation schedule; then as
/// <see cref="LatentConsistencyModelPipeline"/> (guidance embedding as <c>timestep_cond</c>, no classifier-free guidance,
/// the last denoised estimate decoded).
/// </summary>
public sealed class LatentConsistencyModelImg2ImgPipeline : StableDiffusionPipelineBase
{
    /// <summary>model_index.json's class of LCM image-to-image pipelines.</summary>
    public const string PipelineClass = "LatentConsistencyModelImg2ImgPipeline";

    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    /// <exception cref="ArgumentException">The components are of the other model family.</exception>
    public LatentConsistencyModelImg2ImgPipeline(StableDiffusionComponents components) : base(components, xl: false) { }

    /// <summary>Loads a diffusers pipeline folder or hub repo id (e.g. SimianLuo/LCM_Dreamshaper_v7).</summary>
    public static LatentConsistencyModelImg2ImgPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>A pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static LatentConsistencyModelImg2ImgPipeline FromPipe(StableDiffusionPipelineBase other) => new(other.Components);

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters, a UNet without time_cond_proj_dim, or a scheduler other than
    /// LCMScheduler (checked before any compute).</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusionPipelineOutput Generate(LatentConsistencyModelImg2ImgRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default) => Run(request, typeof(LatentConsistencyModelImg2ImgRequest), progress, cancellationToken);
}
