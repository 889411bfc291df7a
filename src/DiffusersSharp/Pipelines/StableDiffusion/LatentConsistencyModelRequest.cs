namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>What the two latent-consistency requests add to the Stable Diffusion ones.</summary>
public interface ILatentConsistencyRequest
{
    /// <summary>diffusers' <c>original_inference_steps</c>: the length of the distillation schedule the LCMScheduler
    /// picks its timesteps from; null takes the scheduler config's (50).</summary>
    int? OriginalInferenceSteps { get; }
}

/// <summary>
/// The parameters of <see cref="LatentConsistencyModelPipeline"/> (diffusers' <c>LatentConsistencyModelPipeline.__call__</c>):
/// 4 steps and guidance 8.5 by default. The guidance scale is not classifier-free guidance: its embedding
/// (<c>w = guidance_scale - 1</c>) is the UNet's <c>timestep_cond</c>, and the UNet runs once per step. Not taken, as
/// diffusers' call has no such parameter: negative prompts and their embeddings, guidance_rescale, eta, SDXL members.
/// </summary>
public sealed record LatentConsistencyModelRequest : StableDiffusionRequest, ILatentConsistencyRequest
{
    /// <inheritdoc/>
    public int? OriginalInferenceSteps { get; init; }
}

/// <summary>
/// The parameters of <see cref="LatentConsistencyModelImg2ImgPipeline"/> (diffusers'
/// <c>LatentConsistencyModelImg2ImgPipeline.__call__</c>): as <see cref="LatentConsistencyModelRequest"/> plus the image
/// and <see cref="StableDiffusionImg2ImgRequest.Strength"/> (default 0.8), which shortens the distillation schedule the
/// timesteps come from (<c>int(original_inference_steps x strength)</c> entries) rather than dropping steps. The output
/// has the image's size rounded down to multiples of 8 (diffusers' call takes no height / width).
/// </summary>
public sealed record LatentConsistencyModelImg2ImgRequest : StableDiffusionImg2ImgRequest, ILatentConsistencyRequest
{
    /// <inheritdoc/>
    public int? OriginalInferenceSteps { get; init; }
}
