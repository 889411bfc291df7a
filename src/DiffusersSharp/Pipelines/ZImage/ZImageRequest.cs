using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.ZImage;

/// <summary>
/// The parameters of a Z-Image text-to-image call, with diffusers' names and defaults (<c>ZImagePipeline.__call__</c>).
/// Prompt embeddings are lists, one [L_i, cap_feat_dim] tensor per prompt, each as long as that prompt's real tokens (what
/// the pipeline's Qwen3 encoding keeps). Tensors passed in stay owned by the caller.
/// </summary>
public record ZImageRequest
{
    /// <summary>The prompt(s), encoded by the components' Qwen3 text encoder in its chat template (components without one
    /// take <see cref="PromptEmbeds"/> instead).</summary>
    public PromptList? Prompt { get; init; }

    /// <summary>The negative prompt(s) for CFG (null: diffusers' "" per prompt); needs the text encoder, like <see cref="Prompt"/>.</summary>
    public PromptList? NegativePrompt { get; init; }

    /// <summary>Prompt embeddings, one [L_i, cap_feat_dim] tensor per prompt (diffusers' <c>prompt_embeds</c> list: Qwen3's
    /// second-to-last hidden states of the prompt's unmasked tokens). The batch is their count.</summary>
    public IReadOnlyList<Tensor>? PromptEmbeds { get; init; }

    /// <summary>Negative embeddings, one per prompt (lengths of their own); required with <see cref="PromptEmbeds"/> when CFG runs.</summary>
    public IReadOnlyList<Tensor>? NegativePromptEmbeds { get; init; }

    /// <summary>Image height in pixels, a multiple of 16 (default 1024).</summary>
    public int? Height { get; init; }

    /// <summary>Image width in pixels, a multiple of 16 (default 1024).</summary>
    public int? Width { get; init; }

    /// <summary>Denoising steps (diffusers' default 50; Z-Image-Turbo is made for 8 or 9 with guidance 0).</summary>
    public int? NumInferenceSteps { get; init; }

    /// <summary>Custom sigmas, one per step (the scheduler's shift is still applied); the step count is their count.</summary>
    public float[]? Sigmas { get; init; }

    /// <summary>
    /// Classifier-free guidance scale: above 1 each step also runs the negative embeddings and uses
    /// <c>pos + scale · (pos − neg)</c> (note: from the positive side, unlike the other pipelines). Default 5.0 as in
    /// diffusers; Z-Image-Turbo runs with 0.
    /// </summary>
    public double GuidanceScale { get; init; } = 5.0;

    /// <summary>
    /// diffusers' <c>cfg_normalization</c> (a bool there, used as a number): above 0, each guided prediction whose norm
    /// exceeds this factor × the norm of the positive prediction is scaled down to it. diffusers' <c>True</c> is 1; 0 (its
    /// default <c>False</c>) turns it off.
    /// </summary>
    public double CfgNormalization { get; init; }

    /// <summary>
    /// diffusers' <c>cfg_truncation</c>: with CFG, steps whose normalized time <c>(1000 − t) / 1000</c> (0 at pure noise)
    /// is above this value run without CFG (the positive prediction only). Values above 1 (and the default 1) never cut.
    /// </summary>
    public double CfgTruncation { get; init; } = 1.0;

    /// <summary>Images per prompt.</summary>
    public int NumImagesPerPrompt { get; init; } = 1;

    /// <summary>Random source (one for the batch, like a single torch.Generator). Null draws from a fresh random seed.</summary>
    public Runtime.Generator? Generator { get; init; }

    /// <summary>One generator per image (prompts × images per prompt), like a list of torch.Generators.</summary>
    public IReadOnlyList<Runtime.Generator>? Generators { get; init; }

    /// <summary>Initial latents [prompts × images, 16, H/8, W/8] instead of drawn noise (text-to-image); image-to-image
    /// takes them as the noised image latents to start from (no image encoding, no noise), as diffusers does.</summary>
    public Tensor? Latents { get; init; }

    /// <summary>What to return (Latent: the final latents [B, 16, H/8, W/8]).</summary>
    public OutputType OutputType { get; init; } = OutputType.Image;

    /// <summary>The token limit of prompt encoding, chat template included (diffusers' default 512); longer prompts are cut
    /// (<see cref="ZImagePipelineBase.OnPromptTruncated"/> tells).</summary>
    public int MaxSequenceLength { get; init; } = 512;

    /// <summary>
    /// Called after every step (diffusers' <c>callback_on_step_end</c>); may replace the latents and the embedding lists
    /// (<see cref="StepEndContext.PromptEmbedsList"/>, <see cref="StepEndContext.NegativePromptEmbedsList"/>), change the
    /// guidance scale (<see cref="StepEndContext.GuidanceScale"/>, as a callback setting <c>pipe._guidance_scale</c>) or interrupt.
    /// </summary>
    public Action<StepEndContext>? CallbackOnStepEnd { get; init; }
}

/// <summary>
/// Image-to-image parameters (diffusers' <c>ZImageImg2ImgPipeline.__call__</c>): the text-to-image ones plus the image and
/// strength. The image is preprocessed at its own size rounded down to a multiple of 16 (diffusers passes no size to the
/// processor), which height and width, if given, must equal.
/// </summary>
public record ZImageImg2ImgRequest : ZImageRequest
{
    /// <summary>The starting image: RGB, an 8-bit image or a [N, 3, H, W] tensor in [0, 1].</summary>
    public PipelineImage? Image { get; init; }

    /// <summary>diffusers' default strength of <c>ZImageImg2ImgPipeline</c>.</summary>
    public const double DefaultStrength = 0.6;

    /// <summary>How much to change the image, in [0, 1]: the fraction of the schedule that is run (default 0.6).</summary>
    public double Strength { get; init; } = DefaultStrength;
}
