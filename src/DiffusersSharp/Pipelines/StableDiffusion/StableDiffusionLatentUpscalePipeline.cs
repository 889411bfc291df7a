namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>
/// Text-guided x2 latent upscaling (diffusers' <c>StableDiffusionLatentUpscalePipeline</c>, stabilityai/sd-x2-latent-upscaler):
/// a K-diffusion UNet (<see cref="Models.Unets.UNet2DConditionModelConfig.IsKUNet"/>) denoises latents of twice the size of
/// the given latents, which it sees beside them (nearest-upsampled), with the Karras et al. preconditioning of an
/// <c>EulerDiscreteScheduler</c> (<c>prediction_type "sample"</c>): its timestep is <c>log(sigma) / 4</c>, its output's
/// last (variance) channel is dropped and the denoised estimate is <c>x / (sigma² + 1) + sigma / √(sigma² + 1) · F(x)</c>;
/// the time embedding is conditioned (<c>timestep_cond</c>) on a noise-level embedding and the pooled text. Typical use:
/// the latents of a Stable Diffusion 1.x / 2.x pipeline (<see cref="OutputType.Latent"/>) with the same prompt.
/// </summary>
public sealed class StableDiffusionLatentUpscalePipeline : StableDiffusionPipelineBase
{
    /// <summary>model_index.json's class of the latent upscaler.</summary>
    public const string PipelineClass = "StableDiffusionLatentUpscalePipeline";

    /// <summary>Wraps loaded latent-upscaler components (taking a reference on them).</summary>
    /// <exception cref="ArgumentException">The components' UNet is not a K-UNet, or they are SDXL's or the x4 upscaler's.</exception>
    public StableDiffusionLatentUpscalePipeline(StableDiffusionComponents components) : base(components, xl: false, latentUpscaler: true) { }

    /// <summary>Loads a diffusers pipeline folder or hub repo id (e.g. stabilityai/sd-x2-latent-upscaler).</summary>
    /// <exception cref="System.IO.InvalidDataException">The folder is not such a pipeline (or misses a component).</exception>
    public static StableDiffusionLatentUpscalePipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>A pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>), which must be a latent upscaler's.</summary>
    /// <exception cref="ArgumentException">The other pipeline's components are not a latent upscaler's.</exception>
    public static StableDiffusionLatentUpscalePipeline FromPipe(StableDiffusionPipelineBase other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return new(other.Components);
    }

    /// <summary>Upscales <see cref="StableDiffusionLatentUpscaleRequest.Image"/> twice as the prompt describes it (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute).</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusionPipelineOutput Generate(StableDiffusionLatentUpscaleRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default) => RunLatentUpscale(request, progress, cancellationToken);
}
