namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>
/// The parameters of an InstructPix2Pix edit (diffusers' <c>StableDiffusionInstructPix2PixPipeline.__call__</c>): the
/// prompt is an instruction ("make it snowy") applied to <see cref="Image"/>, which keeps its size (rounded down to
/// multiples of 8). 100 steps and guidance 7.5 by default. Not here, as in diffusers' pipeline: height / width, strength,
/// clip_skip, guidance_rescale; IP-Adapter inputs are not supported here yet.
/// </summary>
public record StableDiffusionInstructPix2PixRequest : StableDiffusionRequest
{
    /// <summary>The image to edit (RGB), or a [B, 4, h, w] latent tensor taken as its latents.</summary>
    public PipelineImage? Image { get; init; }

    /// <summary>How closely the result follows the image (diffusers' <c>image_guidance_scale</c>, default 1.5, at least 1
    /// for guidance): the prediction is <c>uncond + g · (text − image) + ig · (image − uncond)</c>.</summary>
    public double ImageGuidanceScale { get; init; } = 1.5;
}
