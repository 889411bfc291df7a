using DeviceType = TorchSharp.DeviceType;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion3;

/// <summary>
/// The parameters of a Stable Diffusion 3 text-to-image call, with diffusers' names and defaults
/// (<c>StableDiffusion3Pipeline.__call__</c>). Tensors passed in stay owned by the caller.
/// </summary>
public record StableDiffusion3Request
{
    /// <summary>The prompt(s); required unless <see cref="PromptEmbeds"/> is given.</summary>
    public PromptList? Prompt { get; init; }

    /// <summary>Prompt for CLIP-G (defaults to <see cref="Prompt"/>).</summary>
    public PromptList? Prompt2 { get; init; }

    /// <summary>Prompt for T5 (defaults to <see cref="Prompt"/>).</summary>
    public PromptList? Prompt3 { get; init; }

    /// <summary>Negative prompt(s), used when guidance is on (default "").</summary>
    public PromptList? NegativePrompt { get; init; }

    /// <summary>Negative prompt for CLIP-G (defaults to <see cref="NegativePrompt"/>).</summary>
    public PromptList? NegativePrompt2 { get; init; }

    /// <summary>Negative prompt for T5 (defaults to <see cref="NegativePrompt"/>).</summary>
    public PromptList? NegativePrompt3 { get; init; }

    /// <summary>Image height in pixels, a multiple of 16 (default: transformer sample_size x VAE scale factor, 1024 for SD3).</summary>
    public int? Height { get; init; }

    /// <summary>Image width in pixels, a multiple of 16 (default as <see cref="Height"/>).</summary>
    public int? Width { get; init; }

    /// <summary>Denoising steps (default 28 for text-to-image, 50 for image-to-image and inpainting).</summary>
    public int? NumInferenceSteps { get; init; }

    /// <summary>Custom sigmas for the scheduler (the scheduler's shift is still applied, as in diffusers).</summary>
    public float[]? Sigmas { get; init; }

    /// <summary>Classifier-free guidance scale; guidance is on when above 1.</summary>
    public double GuidanceScale { get; init; } = 7.0;

    /// <summary>Images per prompt.</summary>
    public int NumImagesPerPrompt { get; init; } = 1;

    /// <summary>Random source (one for the batch, like a single torch.Generator). Null draws from a fresh random seed.</summary>
    public Runtime.Generator? Generator { get; init; }

    /// <summary>One generator per image (batch x images per prompt), like a list of torch.Generators.</summary>
    public IReadOnlyList<Runtime.Generator>? Generators { get; init; }

    /// <summary>Initial latents [B*n, 16, H/8, W/8] instead of drawn noise.</summary>
    public Tensor? Latents { get; init; }

    /// <summary>Precomputed prompt embeddings [B, 77 + max_sequence_length, joint_attention_dim].</summary>
    public Tensor? PromptEmbeds { get; init; }

    /// <summary>Precomputed negative prompt embeddings.</summary>
    public Tensor? NegativePromptEmbeds { get; init; }

    /// <summary>Precomputed pooled prompt embeddings [B, 2048]; required with <see cref="PromptEmbeds"/>.</summary>
    public Tensor? PooledPromptEmbeds { get; init; }

    /// <summary>Precomputed negative pooled prompt embeddings.</summary>
    public Tensor? NegativePooledPromptEmbeds { get; init; }

    /// <summary>What to return.</summary>
    public OutputType OutputType { get; init; } = OutputType.Image;

    /// <summary>CLIP layers to skip from the end (positive prompt only, as in diffusers).</summary>
    public int? ClipSkip { get; init; }

    /// <summary>T5 sequence length (at most 512).</summary>
    public int MaxSequenceLength { get; init; } = 256;

    /// <summary>Transformer blocks to skip for skip-layer guidance (text-to-image only; [7, 8, 9] for SD3.5-Medium).</summary>
    public IReadOnlyList<int>? SkipGuidanceLayers { get; init; }

    /// <summary>Skip-layer guidance scale.</summary>
    public double SkipLayerGuidanceScale { get; init; } = 2.8;

    /// <summary>Fraction of the steps after which skip-layer guidance stops.</summary>
    public double SkipLayerGuidanceStop { get; init; } = 0.2;

    /// <summary>Fraction of the steps after which skip-layer guidance starts.</summary>
    public double SkipLayerGuidanceStart { get; init; } = 0.01;

    /// <summary>The dynamic-shifting parameter (only used when the scheduler config enables dynamic shifting).</summary>
    public double? Mu { get; init; }

    /// <summary>Called after every step; may replace latents and embeddings or interrupt.</summary>
    public Action<StepEndContext>? CallbackOnStepEnd { get; init; }

    /// <summary>IP-Adapter: the image prompt (diffusers' <c>ip_adapter_image</c>), encoded by the SigLIP image encoder
    /// (<c>hidden_states[-2]</c>; the negative is zeros); a tensor is taken as pixel values [1, 3, S, S]. Needs an
    /// IP-Adapter and its image encoder (<see cref="StableDiffusion3Components.LoadIpAdapter"/>).</summary>
    public PipelineImage? IpAdapterImage { get; init; }

    /// <summary>IP-Adapter: precomputed image features instead of <see cref="IpAdapterImage"/> (diffusers'
    /// <c>ip_adapter_image_embeds</c>): [1, S, D] for one image, under guidance [2, S, D] with the negative first, as
    /// diffusers chunks them; repeated for every prompt and image.</summary>
    public Tensor? IpAdapterImageEmbeds { get; init; }

    /// <summary>IP-Adapter scale for this call only (not in diffusers' call; default: the loaded adapter's, 0.5 after
    /// loading, or what <see cref="StableDiffusion3Components.SetIpAdapterScale"/> set).</summary>
    public double? IpAdapterScale { get; init; }

    /// <summary>
    /// Not in diffusers: run identical rows that end the prompt embeddings (the zero T5 block when T5 is not loaded) as one
    /// counted row (<see cref="Models.Transformers.SD3Transformer2DModel.CollapseRepeatedTail"/>): the same images within
    /// float rounding, with 78 text tokens instead of 333. False runs the full sequence as diffusers does. Null (the
    /// default) collapses on the CPU only (<see cref="CollapsesRepeatedTextOn"/>).
    /// </summary>
    public bool? CollapseRepeatedText { get; init; }

    /// <summary>
    /// Whether <see cref="CollapseRepeatedText"/> applies on <paramref name="device"/>. By default only the CPU collapses:
    /// there 128x128 SD3 images took 0.2 s instead of 0.43 s; on CUDA the counted key is an additive attention mask, which
    /// keeps scaled_dot_product_attention off its flash kernel, and an H200 ran SD3.5-Medium at 1024x1024 slower collapsed
    /// (3.51 s per 40-step image, median of 3) than over the full sequence (3.37 s), measured in one call.
    /// </summary>
    public bool CollapsesRepeatedTextOn(Device device) => CollapsesRepeatedText(CollapseRepeatedText, device);

    /// <summary>A <see cref="CollapseRepeatedText"/> setting resolved for <paramref name="device"/>: null means the CPU only.</summary>
    public static bool CollapsesRepeatedText(bool? setting, Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        return setting ?? device.type == DeviceType.CPU;
    }
}

/// <summary>Image-to-image parameters (<c>StableDiffusion3Img2ImgPipeline.__call__</c>): the text-to-image ones plus the image and strength.</summary>
public record StableDiffusion3Img2ImgRequest : StableDiffusion3Request
{
    /// <summary>The starting image (RGB), or a [B,16,h,w] latent tensor used as is.</summary>
    public PipelineImage? Image { get; init; }

    /// <summary>How much to change the image, in [0, 1]: the fraction of the schedule that is run.</summary>
    public double Strength { get; init; } = 0.6;
}

/// <summary>Inpainting parameters (<c>StableDiffusion3InpaintPipeline.__call__</c>).</summary>
public record StableDiffusion3InpaintRequest : StableDiffusion3Img2ImgRequest
{
    /// <summary>The mask: white (1) is repainted, black (0) kept. Grayscale or RGB; binarized at 0.5.</summary>
    public PipelineImage? MaskImage { get; init; }

    /// <summary>Latents of the masked image, if precomputed.</summary>
    public Tensor? MaskedImageLatents { get; init; }

    /// <summary>
    /// diffusers' <c>padding_mask_crop</c>: inpaint only the rectangle around the mask's non-black pixels, grown by this
    /// many pixels and widened to the output's aspect ratio, at the full output size, then paste the result back onto the
    /// original image (which keeps its size; output type Image only). The image and mask must be 8-bit images of one size.
    /// </summary>
    public int? PaddingMaskCrop { get; init; }
}

/// <summary>
/// The parameters of an SD3 ControlNet text-to-image call (<c>StableDiffusion3ControlNetPipeline.__call__</c>), with
/// diffusers' names and defaults. Skip-layer guidance is not a parameter of that pipeline and is refused.
/// </summary>
public record StableDiffusion3ControlNetRequest : StableDiffusion3Request
{
    /// <summary>
    /// The control image (diffusers' <c>control_image</c>): resized to the output size (LANCZOS), normalized to [-1, 1] and
    /// encoded by the VAE (a posterior sample, then <c>(latents - shift) x scaling</c>; no shift for ControlNets with
    /// <c>force_zeros_for_pooled_projection</c>). A tensor [1 or B, 3, H, W] is taken as it is (in [-1, 1], at the output size).
    /// </summary>
    public PipelineImage? ControlImage { get; init; }

    /// <summary>One control image per ControlNet, in order (diffusers' list form with <c>SD3MultiControlNetModel</c>); instead of <see cref="ControlImage"/>.</summary>
    public IReadOnlyList<PipelineImage>? ControlImages { get; init; }

    /// <summary>Multiplies the ControlNets' residuals before the transformer adds them (default 1.0); all of them unless
    /// <see cref="ControlNetConditioningScales"/> is given.</summary>
    public double ControlNetConditioningScale { get; init; } = 1.0;

    /// <summary>One conditioning scale per ControlNet (diffusers' list form).</summary>
    public IReadOnlyList<double>? ControlNetConditioningScales { get; init; }

    /// <summary>The fraction of the steps after which the ControlNets start to apply (default 0).</summary>
    public double ControlGuidanceStart { get; init; }

    /// <summary>One start per ControlNet (diffusers' list form).</summary>
    public IReadOnlyList<double>? ControlGuidanceStarts { get; init; }

    /// <summary>The fraction of the steps after which they stop applying (default 1).</summary>
    public double ControlGuidanceEnd { get; init; } = 1.0;

    /// <summary>One end per ControlNet (diffusers' list form).</summary>
    public IReadOnlyList<double>? ControlGuidanceEnds { get; init; }

    /// <summary>
    /// The pooled projections given to ControlNets without <c>force_zeros_for_pooled_projection</c> (SD3.5 ControlNets),
    /// [B', pooled_projection_dim] with B' the transformer's batch (doubled under CFG); default the pooled prompt embeddings
    /// (CFG-batched). ControlNets with <c>force_zeros_for_pooled_projection</c> always get zeros.
    /// </summary>
    public Tensor? ControlNetPooledProjections { get; init; }

    /// <summary>
    /// Draws the control images' VAE posterior samples. diffusers draws them from torch's global generator, so
    /// <c>torch.manual_seed(s)</c> before its call equals <c>new Generator("cpu").ManualSeed(s)</c> here; null: a fresh
    /// random seed (as an unseeded global generator).
    /// </summary>
    public DiffusersSharp.Runtime.Generator? ControlImageGenerator { get; init; }
}

/// <summary>
/// The parameters of an SD3 ControlNet inpainting call (<c>StableDiffusion3ControlNetInpaintingPipeline.__call__</c>), with
/// diffusers' names and defaults (28 steps, guidance 7.0, scale 1.0, window 0 .. 1): the ControlNet request's, with
/// <see cref="StableDiffusion3ControlNetRequest.ControlImage"/> the image to inpaint and <see cref="ControlMask"/> where.
/// The pipeline runs one ControlNet (a list of control images or settings must have one element). Unlike the text-to-image
/// pipeline, the VAE shift is always applied to the control latents, and the ControlNet's pooled projections are zeros
/// unless <see cref="StableDiffusion3ControlNetRequest.ControlNetPooledProjections"/> is given (then those, whatever the
/// ControlNet's <c>force_zeros_for_pooled_projection</c>).
/// </summary>
public record StableDiffusion3ControlNetInpaintingRequest : StableDiffusion3ControlNetRequest
{
    /// <summary>
    /// The mask (diffusers' <c>control_mask</c>): white (1) is repainted, black (0) kept. An image is converted to grayscale,
    /// resized to the output size and binarized at 0.5; a tensor [1 or B, 1, H, W] (the control image's batch and size) is
    /// taken as it is. The masked image (pixels where the mask is above 0.5 set to -1) is VAE-encoded, and the mask, resized
    /// (nearest) to the latent size and inverted (1 kept, 0 repainted), is appended as the ControlNet's extra channel.
    /// </summary>
    public PipelineImage? ControlMask { get; init; }
}
