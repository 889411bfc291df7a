namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>
/// The parameters of a latent x2 upscale (diffusers' <c>StableDiffusionLatentUpscalePipeline.__call__</c>): the prompt
/// describes <see cref="Image"/>, whose latents go beside the latents at every step; the output is twice their size.
/// 75 steps and guidance 9.0 by default; prompt / negative prompt or their embeddings with their pooled embeddings (the
/// CLIP text encoder's last hidden states and pooled output), generators, latents, output types and the per-step callback
/// as in the other pipelines. Not taken, as diffusers' call has no such parameter: num_images_per_prompt other than 1,
/// height / width, guidance_rescale, clip_skip, eta, IP-Adapter inputs (the SDXL members are ignored).
/// </summary>
public sealed record StableDiffusionLatentUpscaleRequest : StableDiffusionRequest
{
    /// <summary>
    /// What to upscale: latents [B, 4, h, w] as a Stable Diffusion pipeline returns them (<see cref="OutputType.Latent"/>:
    /// scaled by the VAE's scaling factor), or an RGB image (or [B, 3, H, W] tensor in [0, 1]) that the VAE encodes first
    /// (a posterior sample from the call's generator, times the scaling factor; sides rounded down to multiples of 8 with
    /// Pillow's BICUBIC). One per prompt.
    /// </summary>
    public PipelineImage? Image { get; init; }
}
