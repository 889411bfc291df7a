namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>
/// T2I-Adapter text-to-image parameters (<c>StableDiffusionAdapterPipeline.__call__</c> and
/// <c>StableDiffusionXLAdapterPipeline.__call__</c>): the adapter image(s) and how strongly and how long the adapters
/// steer. Without <see cref="StableDiffusionRequest.Height"/> / <see cref="StableDiffusionRequest.Width"/> the output has
/// the (first) adapter image's size rounded down to a multiple of the adapter's downscale_factor (8 for SD 1.x / 2.x
/// adapters, 16 for SDXL ones), as diffusers' <c>_default_height_width</c>. With several adapters
/// (<see cref="StableDiffusionComponents.Adapters"/>, diffusers' <c>MultiAdapter</c>) give <see cref="Images"/>, one
/// per adapter in the same order. What diffusers' SD 1.x / 2.x adapter pipeline lacks (guidance_rescale, IP-Adapter
/// inputs, adapter_conditioning_factor) is refused there.
/// </summary>
public record StableDiffusionAdapterRequest : StableDiffusionRequest
{
    /// <summary>
    /// The adapter image (sketch, depth map, pose, canny edges...): resized to the output size with Pillow's LANCZOS and
    /// taken in [0, 1] with its own channels (RGB, or L for a grayscale adapter with in_channels 1), as diffusers'
    /// <c>_preprocess_adapter_image</c>; or a [B, in_channels, height, width] tensor in [0, 1], used as it is (not resized).
    /// Its batch must be the number of prompts. diffusers' <c>image</c>.
    /// </summary>
    public PipelineImage? Image { get; init; }

    /// <summary>One image per adapter, in order (diffusers' <c>image</c> as a list with <c>MultiAdapter</c>); instead of <see cref="Image"/>.</summary>
    public IReadOnlyList<PipelineImage>? Images { get; init; }

    /// <summary>Multiplies the adapter's feature maps before the UNet adds them (default 1.0). With several adapters it is
    /// the weight of each in their sum (diffusers passes it to <c>MultiAdapter</c> as <c>adapter_weights</c>; a single
    /// value here applies to all of them, where diffusers would fail on a float) unless
    /// <see cref="AdapterConditioningScales"/> is given.</summary>
    public double AdapterConditioningScale { get; init; } = 1.0;

    /// <summary>One scale (weight) per adapter (diffusers' list form).</summary>
    public IReadOnlyList<double>? AdapterConditioningScales { get; init; }

    /// <summary>SDXL: the fraction of the steps during which the adapter applies (default 1.0: all); step i takes the
    /// feature maps while <c>i &lt; int(num_inference_steps x factor)</c>, num_inference_steps after denoising_end.
    /// diffusers' <c>adapter_conditioning_factor</c>; SD 1.x / 2.x's adapter pipeline has none.</summary>
    public double AdapterConditioningFactor { get; init; } = 1.0;
}
