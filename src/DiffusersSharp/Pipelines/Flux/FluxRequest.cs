using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// The parameters of a Flux text-to-image call, with diffusers' names and defaults (<c>FluxPipeline.__call__</c>).
/// Tensors passed in stay owned by the caller.
/// </summary>
public record FluxRequest
{
    /// <summary>The prompt(s) for CLIP; required unless <see cref="PromptEmbeds"/> is given.</summary>
    public PromptList? Prompt { get; init; }

    /// <summary>Prompt for T5 (defaults to <see cref="Prompt"/>).</summary>
    public PromptList? Prompt2 { get; init; }

    /// <summary>Negative prompt(s): only used by true CFG (<see cref="TrueCfgScale"/> &gt; 1).</summary>
    public PromptList? NegativePrompt { get; init; }

    /// <summary>Negative prompt for T5 (defaults to <see cref="NegativePrompt"/>).</summary>
    public PromptList? NegativePrompt2 { get; init; }

    /// <summary>
    /// diffusers' true classifier-free guidance: with a value above 1 and a negative prompt (or negative embeddings), each
    /// step runs the transformer twice and uses <c>neg + scale · (pos − neg)</c>. 1 turns it off.
    /// </summary>
    public double TrueCfgScale { get; init; } = 1.0;

    /// <summary>Image height in pixels, a multiple of 16 (default 1024: 128 × the VAE scale factor).</summary>
    public int? Height { get; init; }

    /// <summary>Image width in pixels, a multiple of 16 (default 1024).</summary>
    public int? Width { get; init; }

    /// <summary>Denoising steps (default 28; FLUX.1-schnell is made for about 4).</summary>
    public int? NumInferenceSteps { get; init; }

    /// <summary>Custom sigmas (default <c>linspace(1, 1/N, N)</c>); the scheduler's shift is still applied.</summary>
    public float[]? Sigmas { get; init; }

    /// <summary>
    /// The guidance scale fed to the guidance embedding of guidance-distilled models (FLUX.1-dev); not CFG, no second
    /// transformer pass. Ignored by models without the embedding (FLUX.1-schnell). Default 3.5 (text-to-image; diffusers'
    /// image-to-image and inpainting pipelines default to 7.0).
    /// </summary>
    public double GuidanceScale { get; init; } = 3.5;

    /// <summary>Images per prompt.</summary>
    public int NumImagesPerPrompt { get; init; } = 1;

    /// <summary>Random source (one for the batch, like a single torch.Generator). Null draws from a fresh random seed.</summary>
    public Runtime.Generator? Generator { get; init; }

    /// <summary>One generator per image (batch x images per prompt), like a list of torch.Generators.</summary>
    public IReadOnlyList<Runtime.Generator>? Generators { get; init; }

    /// <summary>Initial packed latents [B·n, (H/16)·(W/16), 64] instead of drawn noise (diffusers' <c>latents</c> are packed).</summary>
    public Tensor? Latents { get; init; }

    /// <summary>Precomputed T5 prompt embeddings [B, S, joint_attention_dim].</summary>
    public Tensor? PromptEmbeds { get; init; }

    /// <summary>Precomputed pooled CLIP embeddings [B, pooled_projection_dim]; required with <see cref="PromptEmbeds"/>.</summary>
    public Tensor? PooledPromptEmbeds { get; init; }

    /// <summary>Precomputed negative T5 embeddings (true CFG).</summary>
    public Tensor? NegativePromptEmbeds { get; init; }

    /// <summary>Precomputed negative pooled embeddings (true CFG); required with <see cref="NegativePromptEmbeds"/>.</summary>
    public Tensor? NegativePooledPromptEmbeds { get; init; }

    /// <summary>What to return (Latent: the final packed latents).</summary>
    public OutputType OutputType { get; init; } = OutputType.Image;

    /// <summary>T5 sequence length (at most 512).</summary>
    public int MaxSequenceLength { get; init; } = 512;

    /// <summary>The dynamic-shifting parameter (default: diffusers' <c>calculate_shift</c> of the image token count).</summary>
    public double? Mu { get; init; }

    /// <summary>
    /// Called after every step; may replace the (packed) latents and the prompt embeddings, change the true CFG scale
    /// (<see cref="StepEndContext.GuidanceScale"/>; 1 or below stops it) or interrupt.
    /// </summary>
    public Action<StepEndContext>? CallbackOnStepEnd { get; init; }

    /// <summary>
    /// IP-Adapter: one image per loaded adapter (diffusers' <c>ip_adapter_image</c>), encoded by the components' image
    /// encoder to its <c>image_embeds</c> (an 8-bit image goes through the feature extractor; a tensor [N, 3, S, S] is taken
    /// as pixel values, N images for that adapter). Needs an IP-Adapter loaded (<see cref="FluxComponents.LoadIpAdapter(string, string?)"/>).
    /// Text-to-image, image-to-image, inpainting, ControlNet text-to-image, Kontext and Kontext inpainting, as in diffusers
    /// (its Fill and ControlNet image-to-image / inpainting pipelines take none).
    /// </summary>
    public IReadOnlyList<PipelineImage>? IpAdapterImage { get; init; }

    /// <summary>
    /// IP-Adapter: precomputed image embeddings instead of <see cref="IpAdapterImage"/> (diffusers'
    /// <c>ip_adapter_image_embeds</c>): one [b, images, D] tensor per adapter (D the image encoder's projection width),
    /// repeated for every prompt and image as diffusers does (<c>cat([e] * batch)</c>), so b is normally 1: each sample
    /// attends to the image tokens of all b rows.
    /// </summary>
    public IReadOnlyList<Tensor>? IpAdapterImageEmbeds { get; init; }

    /// <summary>
    /// IP-Adapter: the image(s) for the negative pass of true CFG (diffusers' <c>negative_ip_adapter_image</c>). When only
    /// one side is given, diffusers encodes an all-black image for the other (which needs the image encoder); the
    /// negative side is only used by true CFG, so without it a missing negative is not computed.
    /// </summary>
    public IReadOnlyList<PipelineImage>? NegativeIpAdapterImage { get; init; }

    /// <summary>IP-Adapter: precomputed embeddings of the negative side (diffusers' <c>negative_ip_adapter_image_embeds</c>),
    /// as <see cref="IpAdapterImageEmbeds"/>.</summary>
    public IReadOnlyList<Tensor>? NegativeIpAdapterImageEmbeds { get; init; }

    /// <summary>IP-Adapter: one scale for every block and adapter in this call (diffusers' <c>set_ip_adapter_scale</c>);
    /// null keeps the transformer's (1.0 after loading, or what <see cref="FluxComponents.SetIpAdapterScale(double)"/> set).
    /// The previous scales are restored after the call.</summary>
    public double? IpAdapterScale { get; init; }

    /// <summary>Whether any IP-Adapter input is set.</summary>
    internal bool HasIpAdapterInput => IpAdapterImage is not null || IpAdapterImageEmbeds is not null
        || NegativeIpAdapterImage is not null || NegativeIpAdapterImageEmbeds is not null || IpAdapterScale is not null;
}

/// <summary>
/// Image-to-image parameters (diffusers' <c>FluxImg2ImgPipeline.__call__</c>): the text-to-image ones plus the image and
/// strength; the guidance scale defaults to 7.0 there. <see cref="FluxRequest.Latents"/> (packed) replace the noised
/// image latents: the image is then not encoded.
/// </summary>
public record FluxImg2ImgRequest : FluxRequest
{
    /// <summary>diffusers' image-to-image and inpainting default guidance scale (7.0).</summary>
    public const double DefaultGuidanceScale = 7.0;

    /// <summary>A request with diffusers' image-to-image defaults.</summary>
    public FluxImg2ImgRequest() => GuidanceScale = DefaultGuidanceScale;

    /// <summary>
    /// The starting image (RGB, resized to the requested size), or a [B, 16, H/8, W/8] latent tensor taken as already
    /// shifted and scaled VAE latents.
    /// </summary>
    public PipelineImage? Image { get; init; }

    /// <summary>How much to change the image, in [0, 1]: the fraction of the schedule that is run (default 0.6).</summary>
    public double Strength { get; init; } = 0.6;
}

/// <summary>
/// Inpainting parameters (diffusers' <c>FluxInpaintPipeline.__call__</c>). <see cref="FluxRequest.Latents"/> are the noise
/// (no scale_noise is applied to them): [B, 16, H/8, W/8] as diffusers takes them here, or packed [B, (H/16)·(W/16), 64].
/// Not here: diffusers' <c>padding_mask_crop</c> and <c>masked_image_latents</c> (which its 64-channel loop never reads).
/// </summary>
public record FluxInpaintRequest : FluxImg2ImgRequest
{
    /// <summary>The mask: white (1) is repainted, black (0) kept. Grayscale or RGB, resized to the requested size, binarized at 0.5.</summary>
    public PipelineImage? MaskImage { get; init; }

    /// <summary>
    /// diffusers' <c>padding_mask_crop</c> (FluxInpaintPipeline): inpaint only the rectangle around the mask's non-black
    /// pixels, grown by this many pixels and widened to the output's aspect ratio, at the full output size, then paste the
    /// result back onto the original image (which keeps its size; output type Image only). The image and mask must be
    /// 8-bit images of one size. Not with ControlNet inpainting: diffusers' FluxControlNetInpaintPipeline crops the image
    /// but never pastes the result back, so it is refused there.
    /// </summary>
    public int? PaddingMaskCrop { get; init; }
}
