using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>
/// The parameters of a text-to-image call of the UNet pipelines, with diffusers' names and defaults
/// (<c>StableDiffusionPipeline.__call__</c> and <c>StableDiffusionXLPipeline.__call__</c>; the members marked SDXL are
/// ignored by SD 1.x / 2.x). Tensors passed in stay owned by the caller.
/// </summary>
public record StableDiffusionRequest
{
    /// <summary>The prompt(s); required unless <see cref="PromptEmbeds"/> is given.</summary>
    public PromptList? Prompt { get; init; }

    /// <summary>SDXL: the prompt for the second text encoder (defaults to <see cref="Prompt"/>).</summary>
    public PromptList? Prompt2 { get; init; }

    /// <summary>Negative prompt(s), used when guidance is on (default: "" for SD 1.x; zeros for SDXL models with
    /// <c>force_zeros_for_empty_prompt</c>).</summary>
    public PromptList? NegativePrompt { get; init; }

    /// <summary>SDXL: the negative prompt for the second text encoder (defaults to <see cref="NegativePrompt"/>).</summary>
    public PromptList? NegativePrompt2 { get; init; }

    /// <summary>Image height in pixels, a multiple of 8 (default: UNet sample_size x VAE scale factor: 512 for SD 1.5, 1024 for SDXL).</summary>
    public int? Height { get; init; }

    /// <summary>Image width in pixels, a multiple of 8 (default as <see cref="Height"/>).</summary>
    public int? Width { get; init; }

    /// <summary>Denoising steps (default 50).</summary>
    public int? NumInferenceSteps { get; init; }

    /// <summary>Classifier-free guidance scale, on when above 1 (default 7.5 for SD 1.x / 2.x, 5.0 for SDXL).</summary>
    public double? GuidanceScale { get; init; }

    /// <summary>Rescales the guided prediction toward the text prediction's standard deviation (0 = off; "Common
    /// Diffusion Noise Schedules and Sample Steps are Flawed", section 3.4).</summary>
    public double GuidanceRescale { get; init; }

    /// <summary>Images per prompt.</summary>
    public int NumImagesPerPrompt { get; init; } = 1;

    /// <summary>Random source (one for the batch, like a single torch.Generator). Null draws from a fresh random seed.</summary>
    public Runtime.Generator? Generator { get; init; }

    /// <summary>One generator per image (batch x images per prompt), like a list of torch.Generators.</summary>
    public IReadOnlyList<Runtime.Generator>? Generators { get; init; }

    /// <summary>Initial latents [B*n, 4, H/8, W/8] instead of drawn noise (not yet scaled by the scheduler's init_noise_sigma).</summary>
    public Tensor? Latents { get; init; }

    /// <summary>Precomputed prompt embeddings [B, 77, cross_attention_dim].</summary>
    public Tensor? PromptEmbeds { get; init; }

    /// <summary>Precomputed negative prompt embeddings.</summary>
    public Tensor? NegativePromptEmbeds { get; init; }

    /// <summary>SDXL: precomputed pooled prompt embeddings [B, projection_dim]; required with <see cref="PromptEmbeds"/>.</summary>
    public Tensor? PooledPromptEmbeds { get; init; }

    /// <summary>SDXL: precomputed negative pooled prompt embeddings.</summary>
    public Tensor? NegativePooledPromptEmbeds { get; init; }

    /// <summary>What to return.</summary>
    public OutputType OutputType { get; init; } = OutputType.Image;

    /// <summary>CLIP layers to skip from the end (positive prompt only, as in diffusers).</summary>
    public int? ClipSkip { get; init; }

    /// <summary>SDXL micro-conditioning: the original image size (height, width); default the output size.</summary>
    public (int Height, int Width)? OriginalSize { get; init; }

    /// <summary>SDXL micro-conditioning: the crop's top-left corner (top, left); default (0, 0).</summary>
    public (int Top, int Left) CropsCoordsTopLeft { get; init; }

    /// <summary>SDXL micro-conditioning: the target size (height, width); default the output size.</summary>
    public (int Height, int Width)? TargetSize { get; init; }

    /// <summary>SDXL: the original size the negative conditioning claims. Text-to-image uses the negative time ids only
    /// when this and <see cref="NegativeTargetSize"/> are both given; image-to-image and inpainting default it to
    /// <see cref="OriginalSize"/>.</summary>
    public (int Height, int Width)? NegativeOriginalSize { get; init; }

    /// <summary>SDXL: the crop corner of the negative conditioning; default (0, 0). Image-to-image and inpainting use it
    /// only with aesthetic-score conditioning (otherwise diffusers puts <see cref="CropsCoordsTopLeft"/> in the negative
    /// time ids too).</summary>
    public (int Top, int Left) NegativeCropsCoordsTopLeft { get; init; }

    /// <summary>SDXL: the target size of the negative conditioning (see <see cref="NegativeOriginalSize"/>); unused with
    /// aesthetic-score conditioning.</summary>
    public (int Height, int Width)? NegativeTargetSize { get; init; }

    /// <summary>SDXL "ensemble of experts": stop after this fraction of the schedule, in (0, 1), and return the
    /// still-noisy latents for a refiner called with the same value as <see cref="StableDiffusionImg2ImgRequest.DenoisingStart"/>
    /// (use <see cref="OutputType.Latent"/>). The cutoff is the timestep <c>round(T - DenoisingEnd * T)</c> (T =
    /// num_train_timesteps): the steps at or above it run. Values outside (0, 1) are ignored, as in diffusers.</summary>
    public double? DenoisingEnd { get; init; }

    /// <summary>DDIM's η (TCD's gamma): the weight of fresh noise in each step, 0 (deterministic, the default) to 1.
    /// Used only by schedulers whose step takes it (DDIM, TCD), with noise from <see cref="Generator"/> /
    /// <see cref="Generators"/>; ignored by the others.</summary>
    public double Eta { get; init; }

    /// <summary>Called after every step; may replace latents and embeddings or interrupt.</summary>
    public Action<StepEndContext>? CallbackOnStepEnd { get; init; }

    /// <summary>IP-Adapter: one image per loaded adapter (diffusers' <c>ip_adapter_image</c>), encoded by the components'
    /// image encoder; needs an IP-Adapter loaded (<see cref="StableDiffusionComponents.LoadIpAdapter"/>).</summary>
    public IReadOnlyList<PipelineImage>? IpAdapterImage { get; init; }

    /// <summary>IP-Adapter: precomputed image embeddings instead of <see cref="IpAdapterImage"/> (diffusers'
    /// <c>ip_adapter_image_embeds</c>): one tensor per adapter, [B, images, D] (images per prompt, D the image encoder's
    /// projection width); with guidance on, [2B, images, D] holding the negative embeddings first, as diffusers chunks them
    /// (zeros for a plain IP-Adapter, as its encode_image makes them).</summary>
    public IReadOnlyList<Tensor>? IpAdapterImageEmbeds { get; init; }

    /// <summary>IP-Adapter: the scale for this call (diffusers' <c>set_ip_adapter_scale</c>); null keeps the UNet's (1.0
    /// after loading, or what <see cref="StableDiffusionComponents.SetIpAdapterScale"/> set).</summary>
    public double? IpAdapterScale { get; init; }
}

/// <summary>Image-to-image parameters (<c>StableDiffusion[XL]Img2ImgPipeline.__call__</c>): the image and strength.</summary>
public record StableDiffusionImg2ImgRequest : StableDiffusionRequest
{
    /// <summary>The starting image (RGB; its size, rounded down to a multiple of 8, is the output size unless
    /// <see cref="StableDiffusionRequest.Height"/> / <see cref="StableDiffusionRequest.Width"/> are given), or a
    /// [B,4,h,w] latent tensor used as is.</summary>
    public PipelineImage? Image { get; init; }

    /// <summary>How much to change the image, in [0, 1] (default 0.8 for SD 1.x / 2.x, 0.3 for SDXL). Ignored by SDXL
    /// when <see cref="DenoisingStart"/> is in (0, 1).</summary>
    public double? Strength { get; init; }

    /// <summary>SDXL "ensemble of experts": skip this fraction of the schedule, in (0, 1), and denoise only the
    /// timesteps below <c>round(T - DenoisingStart * T)</c> (T = num_train_timesteps), starting from the image (or a
    /// base pipeline's latents) as it is. When set, no noise is added to the image, whatever its value (as in diffusers);
    /// a value outside (0, 1) falls back to <see cref="Strength"/> for the schedule.</summary>
    public double? DenoisingStart { get; init; }

    /// <summary>SDXL with aesthetic-score conditioning (<see cref="StableDiffusionComponents.RequiresAestheticsScore"/>,
    /// the refiner): the aesthetic score of the positive conditioning (default 6.0).</summary>
    public double AestheticScore { get; init; } = 6.0;

    /// <summary>SDXL with aesthetic-score conditioning: the aesthetic score of the negative conditioning (default 2.5).</summary>
    public double NegativeAestheticScore { get; init; } = 2.5;
}

/// <summary>Inpainting parameters (<c>StableDiffusion[XL]InpaintPipeline.__call__</c>).</summary>
public record StableDiffusionInpaintRequest : StableDiffusionImg2ImgRequest
{
    /// <summary>The mask: white (1) is repainted, black (0) kept. Grayscale or RGB; binarized at 0.5.</summary>
    public PipelineImage? MaskImage { get; init; }

    /// <summary>
    /// diffusers' <c>padding_mask_crop</c>: inpaint only the rectangle around the mask's non-black pixels, grown by this
    /// many pixels and widened to the output's aspect ratio, at the full output size, then paste the result back onto the
    /// original image (which keeps its size; output type Image only). Sharper detail for a small mask on a large image.
    /// The image and mask must be 8-bit images of one size. With ControlNet inpainting the control images are cropped
    /// the same way.
    /// </summary>
    public int? PaddingMaskCrop { get; init; }
}

/// <summary>
/// ControlNet text-to-image parameters (<c>StableDiffusion[XL]ControlNetPipeline.__call__</c>): the control image(s) and
/// how strongly and when each ControlNet steers. Without <see cref="StableDiffusionRequest.Height"/> /
/// <see cref="StableDiffusionRequest.Width"/> the output has the (first) control image's size, rounded down to a multiple
/// of 8. With several ControlNets (<see cref="StableDiffusionComponents.ControlNets"/>) give <see cref="Images"/>, one
/// per ControlNet in the same order; a single scale, start or end applies to all of them, a list gives one each.
/// </summary>
public record StableDiffusionControlNetRequest : StableDiffusionRequest, IControlNetRequest
{
    /// <summary>The control image (an edge map, depth map, pose...), RGB, resized to the output size (LANCZOS) and taken
    /// in [0, 1] (not normalized); or a [1 or B, 3, H, W] tensor in [0, 1]. diffusers' <c>image</c>.</summary>
    public PipelineImage? Image { get; init; }

    /// <summary>One control image per ControlNet, in order (diffusers' <c>image</c> as a list with
    /// <c>MultiControlNetModel</c>); instead of <see cref="Image"/>.</summary>
    public IReadOnlyList<PipelineImage>? Images { get; init; }

    /// <summary>Multiplies the ControlNets' residuals before the UNet adds them (default 1.0); all of them unless
    /// <see cref="ControlNetConditioningScales"/> is given.</summary>
    public double ControlNetConditioningScale { get; init; } = 1.0;

    /// <summary>One conditioning scale per ControlNet (diffusers' list form).</summary>
    public IReadOnlyList<double>? ControlNetConditioningScales { get; init; }

    /// <summary>The ControlNets see only the conditional half of the batch and their residuals grow from 0.1 to 1 x the
    /// scale along the down path (the unconditional half gets none): they try to recognize the control image's content
    /// even without a prompt (guidance 3 to 5 recommended). Always on when the (first) ControlNet has
    /// global_pool_conditions.</summary>
    public bool GuessMode { get; init; }

    /// <summary>The fraction of the steps after which the ControlNets start to apply (default 0).</summary>
    public double ControlGuidanceStart { get; init; }

    /// <summary>One start per ControlNet (diffusers' list form).</summary>
    public IReadOnlyList<double>? ControlGuidanceStarts { get; init; }

    /// <summary>The fraction of the steps after which they stop applying (default 1).</summary>
    public double ControlGuidanceEnd { get; init; } = 1.0;

    /// <summary>One end per ControlNet (diffusers' list form).</summary>
    public IReadOnlyList<double>? ControlGuidanceEnds { get; init; }

    double? IControlNetRequest.ConditioningScale => ControlNetConditioningScale;
    PipelineImage? IControlNetRequest.ControlImage => Image;
    IReadOnlyList<PipelineImage>? IControlNetRequest.ControlImages => Images;
    string IControlNetRequest.ImageName => "image";
}

/// <summary>
/// ControlNet image-to-image parameters (<c>StableDiffusion[XL]ControlNetImg2ImgPipeline.__call__</c>): the starting
/// <see cref="StableDiffusionImg2ImgRequest.Image"/> and strength, and the control image(s) as
/// <see cref="ControlImage"/> (diffusers' <c>control_image</c>), resized to the output size (by default the starting
/// image's, rounded down to a multiple of 8). SDXL: strength defaults to 0.8 here (not plain SDXL image-to-image's 0.3),
/// and diffusers' SDXL ControlNet image-to-image pipeline has neither denoising_start / denoising_end nor
/// guidance_rescale, so they are refused.
/// </summary>
public record StableDiffusionControlNetImg2ImgRequest : StableDiffusionImg2ImgRequest, IControlNetRequest
{
    /// <summary>The control image, as <see cref="StableDiffusionControlNetRequest.Image"/> is for text-to-image.</summary>
    public PipelineImage? ControlImage { get; init; }

    /// <summary>One control image per ControlNet, in order; instead of <see cref="ControlImage"/>.</summary>
    public IReadOnlyList<PipelineImage>? ControlImages { get; init; }

    /// <summary>Multiplies the ControlNets' residuals (default 0.8, as diffusers' image-to-image ControlNet pipeline).</summary>
    public double ControlNetConditioningScale { get; init; } = 0.8;

    /// <summary>One conditioning scale per ControlNet.</summary>
    public IReadOnlyList<double>? ControlNetConditioningScales { get; init; }

    /// <summary>Guess mode (see <see cref="StableDiffusionControlNetRequest.GuessMode"/>).</summary>
    public bool GuessMode { get; init; }

    /// <summary>The fraction of the steps run after which the ControlNets start to apply (default 0).</summary>
    public double ControlGuidanceStart { get; init; }

    /// <summary>One start per ControlNet.</summary>
    public IReadOnlyList<double>? ControlGuidanceStarts { get; init; }

    /// <summary>The fraction of the steps run after which they stop applying (default 1).</summary>
    public double ControlGuidanceEnd { get; init; } = 1.0;

    /// <summary>One end per ControlNet.</summary>
    public IReadOnlyList<double>? ControlGuidanceEnds { get; init; }

    double? IControlNetRequest.ConditioningScale => ControlNetConditioningScale;
    string IControlNetRequest.ImageName => "control_image";
}

/// <summary>
/// ControlNet inpainting parameters (<c>StableDiffusion[XL]ControlNetInpaintPipeline.__call__</c>): image, mask, strength,
/// and the control image(s) as <see cref="ControlImage"/>. Unlike plain inpainting, the output size defaults to the
/// image's (rounded down to a multiple of 8), as diffusers' ControlNet inpaint pipelines have it. SDXL (diffusers'
/// <c>StableDiffusionXLControlNetInpaintPipeline</c>): strength 0.9999 and conditioning scale 1.0 by default,
/// denoising_start / denoising_end and guidance_rescale as SDXL inpainting has them; it has no negative size / crop
/// micro-conditioning (the negative time ids repeat the positive ones, so those members are refused), and guess mode is
/// only the request's (that pipeline does not turn it on for a ControlNet with global_pool_conditions).
/// </summary>
public record StableDiffusionControlNetInpaintRequest : StableDiffusionInpaintRequest, IControlNetRequest
{
    /// <summary>The control image, as <see cref="StableDiffusionControlNetRequest.Image"/> is for text-to-image.</summary>
    public PipelineImage? ControlImage { get; init; }

    /// <summary>One control image per ControlNet, in order; instead of <see cref="ControlImage"/>.</summary>
    public IReadOnlyList<PipelineImage>? ControlImages { get; init; }

    /// <summary>Multiplies the ControlNets' residuals (default: 0.5 for SD 1.x / 2.x, 1.0 for SDXL, as diffusers'
    /// inpainting ControlNet pipelines have it).</summary>
    public double? ControlNetConditioningScale { get; init; }

    /// <summary>One conditioning scale per ControlNet.</summary>
    public IReadOnlyList<double>? ControlNetConditioningScales { get; init; }

    /// <summary>Guess mode (see <see cref="StableDiffusionControlNetRequest.GuessMode"/>).</summary>
    public bool GuessMode { get; init; }

    /// <summary>The fraction of the steps run after which the ControlNets start to apply (default 0).</summary>
    public double ControlGuidanceStart { get; init; }

    /// <summary>One start per ControlNet.</summary>
    public IReadOnlyList<double>? ControlGuidanceStarts { get; init; }

    /// <summary>The fraction of the steps run after which they stop applying (default 1).</summary>
    public double ControlGuidanceEnd { get; init; } = 1.0;

    /// <summary>One end per ControlNet.</summary>
    public IReadOnlyList<double>? ControlGuidanceEnds { get; init; }

    double? IControlNetRequest.ConditioningScale => ControlNetConditioningScale;
    string IControlNetRequest.ImageName => "control_image";
}

/// <summary>What the three ControlNet requests share, for the pipelines' ControlNet code.</summary>
internal interface IControlNetRequest
{
    PipelineImage? ControlImage { get; }
    IReadOnlyList<PipelineImage>? ControlImages { get; }
    /// <summary>diffusers' name of the control image parameter, for messages.</summary>
    string ImageName { get; }
    /// <summary>The single conditioning scale; null for the pipeline's default.</summary>
    double? ConditioningScale { get; }
    IReadOnlyList<double>? ControlNetConditioningScales { get; }
    bool GuessMode { get; }
    double ControlGuidanceStart { get; }
    IReadOnlyList<double>? ControlGuidanceStarts { get; }
    double ControlGuidanceEnd { get; }
    IReadOnlyList<double>? ControlGuidanceEnds { get; }
}

/// <summary>A UNet pipeline result: images (output type Image) or a tensor (Numpy, Tensor, Latent). Owns the tensor
/// (diffusers' <c>StableDiffusionPipelineOutput</c>, without the safety checker's flags).</summary>
/// <param name="Images">The 8-bit RGB images, one per prompt x image per prompt.</param>
/// <param name="Tensor">NHWC [0,1] (Numpy), NCHW [0,1] (Tensor) or the final latents (Latent).</param>
public sealed record StableDiffusionPipelineOutput(IReadOnlyList<Images.ImageBuffer>? Images, Tensor? Tensor) : IDisposable
{
    /// <summary>Frees the tensor.</summary>
    public void Dispose() => Tensor?.Dispose();
}
