using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.PixArt;

/// <summary>
/// The arguments of a PixArt-Σ / PixArt-α call (diffusers' <c>PixArtSigmaPipeline.__call__</c> /
/// <c>PixArtAlphaPipeline.__call__</c>), with the same defaults. Prompts are lower-cased and stripped before T5, as
/// diffusers does without caption cleaning.
/// </summary>
public sealed record PixArtRequest : IMaskedPromptRequest
{
    /// <summary>The prompt(s); give these or <see cref="PromptEmbeds"/>.</summary>
    public PromptList? Prompt { get; init; }

    /// <summary>The negative prompt(s) for classifier-free guidance; null is diffusers' default <c>""</c>. Not together
    /// with <see cref="NegativePromptEmbeds"/>.</summary>
    public PromptList? NegativePrompt { get; init; }

    /// <summary>Denoising steps (diffusers' default 20).</summary>
    public int NumInferenceSteps { get; init; } = 20;

    /// <summary>Classifier-free guidance scale; 1 or below disables guidance (diffusers' default 4.5).</summary>
    public double GuidanceScale { get; init; } = 4.5;

    /// <summary>Images per prompt.</summary>
    public int NumImagesPerPrompt { get; init; } = 1;

    /// <summary>Output height in pixels (null: transformer sample_size × VAE scale factor, 1024 for the released models).</summary>
    public int? Height { get; init; }

    /// <summary>Output width in pixels (null: as <see cref="Height"/>).</summary>
    public int? Width { get; init; }

    /// <summary>DDIM's η (TCD's gamma): the weight of fresh noise in each step, 0 (deterministic, the default) to 1. Passed
    /// only to schedulers whose step takes it (DDIM, TCD), as diffusers' <c>prepare_extra_step_kwargs</c>; ignored by the others.</summary>
    public double Eta { get; init; }

    /// <summary>The noise generator (CPU generators reproduce PyTorch's draws; a stochastic scheduler's step noise comes
    /// from it too).</summary>
    public Runtime.Generator? Generator { get; init; }

    /// <summary>One generator per image (prompts × images per prompt), instead of <see cref="Generator"/>.</summary>
    public IReadOnlyList<Runtime.Generator>? Generators { get; init; }

    /// <summary>Initial latents [B, 4, H/8, W/8] instead of drawn noise (scaled by the scheduler's init_noise_sigma, as diffusers).</summary>
    public Tensor? Latents { get; init; }

    /// <summary>T5 prompt embeddings [B, S, caption_channels]; needs <see cref="PromptAttentionMask"/>.</summary>
    public Tensor? PromptEmbeds { get; init; }

    /// <summary>The mask of <see cref="PromptEmbeds"/> [B, S] (1 = token, 0 = padding).</summary>
    public Tensor? PromptAttentionMask { get; init; }

    /// <summary>Negative T5 embeddings, the shape of <see cref="PromptEmbeds"/>; needs <see cref="NegativePromptAttentionMask"/>.</summary>
    public Tensor? NegativePromptEmbeds { get; init; }

    /// <summary>The mask of <see cref="NegativePromptEmbeds"/>, the shape of <see cref="PromptAttentionMask"/>.</summary>
    public Tensor? NegativePromptAttentionMask { get; init; }

    /// <summary>The T5 token limit (null: the pipeline's default, 300 for Σ and 120 for α).</summary>
    public int? MaxSequenceLength { get; init; }

    /// <summary>
    /// diffusers' <c>clean_caption</c> (ftfy + BeautifulSoup caption cleaning). Not implemented: true is refused. diffusers
    /// itself falls back to lower-case + strip (what runs here) when bs4 or ftfy is not installed.
    /// </summary>
    public bool CleanCaption { get; init; }

    /// <summary>
    /// diffusers' <c>use_resolution_binning</c> (true by default, as there): the size snaps to the trained size of the
    /// closest aspect ratio (<see cref="PixArtAspectRatios"/>; the transformer's sample_size must be 256, 128, 64 or 32), and
    /// the decoded image is resized and center-cropped back to the requested size (any positive size then). False runs the
    /// size as given (multiples of 8 x the patch size). The latents (output type Latent) are the binned size's.
    /// </summary>
    public bool UseResolutionBinning { get; init; } = true;

    /// <summary>What to return: images, NHWC / NCHW tensors, or the final latents.</summary>
    public OutputType OutputType { get; init; } = OutputType.Image;

    /// <summary>Called after every step (diffusers' legacy <c>callback</c> with <c>callback_steps=1</c>, which is what PixArt
    /// has); may replace the latents and the (CFG-concatenated) prompt embeddings, or interrupt.</summary>
    public Action<StepEndContext>? CallbackOnStepEnd { get; init; }
}
