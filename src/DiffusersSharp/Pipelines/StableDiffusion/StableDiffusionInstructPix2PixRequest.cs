namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>
/// The parameters of an InstructPix2Pix edit (diffusers' <c>StableDiffusionInstructPix2PixPipeline.__call__</c> and
/// <c>StableDiffusionXLInstructPix2PixPipeline.__call__</c>): the prompt is an instruction ("make it snowy") applied to
/// <see cref="Image"/>. 100 steps by default; guidance 7.5 (SDXL 5.0). SD 1.x / 2.x: the output keeps the image's size
/// (rounded down to multiples of 8), and height / width, clip_skip and guidance_rescale are refused, as diffusers' pipeline
/// has none. SDXL: the image is resized to height x width (default the model's size); prompt_2 / negative_prompt_2, pooled
/// embeddings, original_size / crops_coords_top_left / target_size (one set for all three passes: the negative ones are
/// refused), guidance_rescale (toward the instruction pass), denoising_end; no clip_skip. Not here, as in diffusers:
/// strength. IP-Adapter inputs are not supported here yet.
/// </summary>
public record StableDiffusionInstructPix2PixRequest : StableDiffusionRequest
{
    /// <summary>The image to edit (RGB), or a [B, 4, h, w] latent tensor taken as its latents (SDXL: h x 8, w x 8 must be
    /// the output size).</summary>
    public PipelineImage? Image { get; init; }

    /// <summary>How closely the result follows the image (diffusers' <c>image_guidance_scale</c>, default 1.5, at least 1
    /// for guidance): the prediction is <c>uncond + g · (text − image) + ig · (image − uncond)</c>.</summary>
    public double ImageGuidanceScale { get; init; } = 1.5;
}
