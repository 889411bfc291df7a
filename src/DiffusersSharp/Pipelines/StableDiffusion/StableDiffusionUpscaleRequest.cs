namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>
/// The parameters of an x4 upscale (diffusers' <c>StableDiffusionUpscalePipeline.__call__</c>): the prompt describes the
/// low-resolution <see cref="Image"/>, which is noised to <see cref="NoiseLevel"/> and given to the UNet beside the
/// latents at every step; the output is the image's size (rounded down to multiples of the VAE factor, 4) times that factor.
/// 75 steps and guidance 9.0 by default; prompt / negative prompt or their embeddings, <c>num_images_per_prompt</c>,
/// generators, latents, <c>eta</c> (DDIM), <c>clip_skip</c>, output types and the per-step callback as in the other
/// pipelines. Not taken, as diffusers' call has no such parameter: height / width, guidance_rescale, IP-Adapter inputs
/// (the SDXL members are ignored, as by every SD 1.x / 2.x pipeline).
/// </summary>
public sealed record StableDiffusionUpscaleRequest : StableDiffusionRequest
{
    /// <summary>
    /// The low-resolution image (RGB; resized with Pillow's BICUBIC to sides that are multiples of the VAE factor when they
    /// are not, as diffusers' image processor), or a [B, 3, h, w] tensor in [0, 1] (or already in [-1, 1]) holding one image
    /// per prompt. With several prompts and images per prompt, diffusers pairs prompt <c>i</c>'s copies with the images
    /// repeated as a whole (images [a, b, a, b] beside prompts [p0, p0, p1, p1]); this pipeline does the same.
    /// </summary>
    public PipelineImage? Image { get; init; }

    /// <summary>
    /// How much noise the low-resolution scheduler (DDPM) adds to the image before the UNet sees it, as a timestep of that
    /// scheduler (diffusers' default 20; 0 to the model's <c>max_noise_level</c>, 350): higher values let the model invent
    /// more detail and stray further from the input. The UNet is conditioned on it (its class label).
    /// </summary>
    public int NoiseLevel { get; init; } = 20;
}
