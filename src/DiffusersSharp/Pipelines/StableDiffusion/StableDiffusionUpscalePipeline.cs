namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>
/// Text-guided x4 super-resolution with Stable Diffusion 2 (diffusers' <c>StableDiffusionUpscalePipeline</c>,
/// stabilityai/stable-diffusion-x4-upscaler): the low-resolution image, noised by the <c>low_res_scheduler</c> (DDPM) to
/// <see cref="StableDiffusionUpscaleRequest.NoiseLevel"/>, goes beside the latents into a 7-channel UNet conditioned on
/// that noise level (its class embedding); the latents have the image's size and the 3-level VAE decodes them at four
/// times it. The scheduler is the folder's (DDIM with v-prediction in the real repo; <c>Components.UseScheduler</c> swaps
/// it as for the other UNet pipelines). The VAE's latents are scaled by 0.08333, which diffusers' constructor imposes
/// whatever the VAE config says.
/// </summary>
public sealed class StableDiffusionUpscalePipeline : StableDiffusionPipelineBase
{
    /// <summary>model_index.json's class of the x4 upscaler.</summary>
    public const string PipelineClass = "StableDiffusionUpscalePipeline";

    /// <summary>The VAE scaling factor of the x4 upscaler (diffusers sets the VAE config's to it when it differs).</summary>
    public const double ScalingFactor = 0.08333;

    /// <summary>Wraps loaded upscaler components (taking a reference on them).</summary>
    /// <exception cref="ArgumentException">The components are not an x4 upscaler's (no low-resolution scheduler) or are SDXL's.</exception>
    public StableDiffusionUpscalePipeline(StableDiffusionComponents components) : base(components, xl: false, upscaler: true) { }

    /// <summary>Loads a diffusers pipeline folder or hub repo id (e.g. stabilityai/stable-diffusion-x4-upscaler).</summary>
    /// <exception cref="System.IO.InvalidDataException">The folder is not an upscaler (or misses a component).</exception>
    public static StableDiffusionUpscalePipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusionComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>A pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>), which must be an upscaler's.</summary>
    /// <exception cref="ArgumentException">The other pipeline's components are not an x4 upscaler's.</exception>
    public static StableDiffusionUpscalePipeline FromPipe(StableDiffusionPipelineBase other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return new(other.Components);
    }

    /// <summary>Upscales <see cref="StableDiffusionUpscaleRequest.Image"/> four times as the prompt describes it (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute).</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusionPipelineOutput Generate(StableDiffusionUpscaleRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default) => Run(request, typeof(StableDiffusionUpscaleRequest), progress, cancellationToken);
}
