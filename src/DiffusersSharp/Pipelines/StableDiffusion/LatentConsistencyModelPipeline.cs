namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>
/// Text-to-image with a latent consistency model (diffusers' <c>LatentConsistencyModelPipeline</c>, e.g.
/// SimianLuo/LCM_Dreamshaper_v7): a guidance-distilled SD 1.x / 2.x UNet (<c>time_cond_proj_dim</c>) takes the
/// guidance-scale embedding as <c>timestep_cond</c> and runs once per step (no classifier-free guidance, no negative
/// prompt); the LCMScheduler's denoised estimate of the last step is decoded. 4 steps and guidance 8.5 by default.
/// </summary>
public sealed class LatentConsistencyModelPipeline : StableDiffusionPipelineBase
{
    /// <summary>model_index.json's class of LCM text-to-image models.</summary>
    public const string PipelineClass = "LatentConsistencyModelPipeline";

    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    /// <exception cref="ArgumentException">The components are of the other model family.</exception>
    public LatentConsistencyModelPipeline(StableDiffusionComponents components) : base(components, xl: false) { }

    /// <summary>Loads a diffusers pipeline folder or hub repo id (e.g. SimianLuo/LCM_Dreamshaper_v7).</summary>
    public static LatentConsistencyModelPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>A pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static LatentConsistencyModelPipeline FromPipe(StableDiffusionPipelineBase other) => new(other.Components);

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters, a UNet without time_cond_proj_dim, or a scheduler other than
    /// LCMScheduler (checked before any compute).</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusionPipelineOutput Generate(LatentConsistencyModelRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default) => Run(request, typeof(LatentConsistencyModelRequest), progress, cancellationToken);
}
