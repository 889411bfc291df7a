using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Chroma;

/// <summary>
/// The parameters of a Chroma text-to-image call, with diffusers' names and defaults (<c>ChromaPipeline.__call__</c>).
/// Tensors passed in stay owned by the caller.
/// </summary>
public record ChromaRequest
{
    /// <summary>diffusers' default number of steps (35).</summary>
    public const int DefaultSteps = 35;

    /// <summary>diffusers' default guidance scale (5.0).</summary>
    public const double DefaultGuidanceScale = 5.0;

    /// <summary>The prompt(s) for T5; required unless <see cref="PromptEmbeds"/> is given.</summary>
    public PromptList? Prompt { get; init; }

    /// <summary>
    /// Negative prompt(s) for classifier-free guidance (one, or one per prompt); null is diffusers' default <c>""</c>.
    /// Ignored without guidance (<see cref="GuidanceScale"/> ≤ 1). Not together with <see cref="NegativePromptEmbeds"/>.
    /// </summary>
    public PromptList? NegativePrompt { get; init; }

    /// <summary>Image height in pixels, a multiple of 16 (default 1024: 128 × the VAE scale factor).</summary>
    public int? Height { get; init; }

    /// <summary>Image width in pixels, a multiple of 16 (default 1024).</summary>
    public int? Width { get; init; }

    /// <summary>Denoising steps (null: 35, diffusers' default).</summary>
    public int? NumInferenceSteps { get; init; }

    /// <summary>Custom sigmas (default <c>linspace(1, 1/N, N)</c>); the scheduler's shift is still applied.</summary>
    public float[]? Sigmas { get; init; }

    /// <summary>
    /// Classifier-free guidance scale: above 1 each step runs the transformer on the prompt and on the negative prompt and
    /// uses <c>neg + scale · (pos − neg)</c>; 1 or below runs the prompt alone. Default 5.0.
    /// </summary>
    public double GuidanceScale { get; init; } = DefaultGuidanceScale;

    /// <summary>Images per prompt.</summary>
    public int NumImagesPerPrompt { get; init; } = 1;

    /// <summary>Random source (one for the batch, like a single torch.Generator). Null draws from a fresh random seed.</summary>
    public Runtime.Generator? Generator { get; init; }

    /// <summary>One generator per image (prompts × images per prompt), like a list of torch.Generators.</summary>
    public IReadOnlyList<Runtime.Generator>? Generators { get; init; }

    /// <summary>Initial packed latents [B·n, (H/16)·(W/16), 64] instead of drawn noise (diffusers' <c>latents</c> are packed).</summary>
    public Tensor? Latents { get; init; }

    /// <summary>
    /// Precomputed T5 embeddings [B, S, joint_attention_dim]; need <see cref="PromptAttentionMask"/>. Repeated for
    /// <see cref="NumImagesPerPrompt"/> (adjacent copies, as the prompt path repeats them; diffusers 0.36 repeats only
    /// what it encodes itself and fails with given embeddings and several images per prompt).
    /// </summary>
    public Tensor? PromptEmbeds { get; init; }

    /// <summary>
    /// The transformer's text mask of <see cref="PromptEmbeds"/> [B, S] (diffusers' <c>prompt_attention_mask</c>): Chroma
    /// keeps the prompt's tokens and the first padding token (see <see cref="ChromaPipelineBase.TransformerTextMask"/>).
    /// Floating (what the pipeline builds: 1 kept, 0 masked, added to the attention logits as diffusers passes it), bool
    /// (text-to-image: a true masking, as diffusers takes a bool mask) or integer (taken as float).
    /// </summary>
    public Tensor? PromptAttentionMask { get; init; }

    /// <summary>Precomputed negative T5 embeddings [B, S', joint_attention_dim] (CFG); need <see cref="NegativePromptAttentionMask"/>.</summary>
    public Tensor? NegativePromptEmbeds { get; init; }

    /// <summary>The transformer's text mask of <see cref="NegativePromptEmbeds"/> [B, S'], as <see cref="PromptAttentionMask"/>.</summary>
    public Tensor? NegativePromptAttentionMask { get; init; }

    /// <summary>What to return (Latent: the final packed latents).</summary>
    public OutputType OutputType { get; init; } = OutputType.Image;

    /// <summary>T5 sequence length (at most 512, the default).</summary>
    public int MaxSequenceLength { get; init; } = 512;

    /// <summary>The dynamic-shifting parameter (default: diffusers' <c>calculate_shift</c> of the image token count).</summary>
    public double? Mu { get; init; }

    /// <summary>
    /// Called after every step (diffusers' <c>callback_on_step_end</c>, whose tensors are <c>latents</c> and
    /// <c>prompt_embeds</c>); may replace the packed latents and the prompt embeddings, change the guidance scale
    /// (<see cref="StepEndContext.GuidanceScale"/>; 1 or below drops the negative pass) or interrupt.
    /// </summary>
    public Action<StepEndContext>? CallbackOnStepEnd { get; init; }
}

/// <summary>
/// Image-to-image parameters (diffusers' <c>ChromaImg2ImgPipeline.__call__</c>): the text-to-image ones plus the image and
/// strength (default 0.9). <see cref="ChromaRequest.Latents"/> (packed) replace the noised image latents: the image is
/// then not encoded.
/// </summary>
public record ChromaImg2ImgRequest : ChromaRequest
{
    /// <summary>diffusers' default strength of ChromaImg2ImgPipeline (0.9).</summary>
    public const double DefaultStrength = 0.9;

    /// <summary>
    /// The starting image (RGB, resized to the requested size), or a [N, 16, H/8, W/8] latent tensor taken as already
    /// shifted and scaled VAE latents (N dividing the batch).
    /// </summary>
    public PipelineImage? Image { get; init; }

    /// <summary>How much to change the image, in [0, 1]: the fraction of the schedule that is run (default 0.9).</summary>
    public double Strength { get; init; } = DefaultStrength;
}
