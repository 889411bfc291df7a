using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Sana;

/// <summary>
/// The arguments of a Sana call (diffusers' <c>SanaPipeline.__call__</c>), with the same defaults. Prompts are
/// lower-cased and stripped before Gemma, as diffusers does without caption cleaning, and the complex human instruction
/// is put in front of them.
/// </summary>
public record SanaRequest : IMaskedPromptRequest
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

    /// <summary>Output height in pixels (diffusers' default 1024).</summary>
    public int Height { get; init; } = 1024;

    /// <summary>Output width in pixels (diffusers' default 1024).</summary>
    public int Width { get; init; } = 1024;

    /// <summary>The noise generator (CPU generators reproduce PyTorch's draws).</summary>
    public Runtime.Generator? Generator { get; init; }

    /// <summary>One generator per image (prompts × images per prompt), instead of <see cref="Generator"/>.</summary>
    public IReadOnlyList<Runtime.Generator>? Generators { get; init; }

    /// <summary>Initial latents [B, C, H/32, W/32] (float32) instead of drawn noise.</summary>
    public Tensor? Latents { get; init; }

    /// <summary>Gemma prompt embeddings [B, S, caption_channels]; needs <see cref="PromptAttentionMask"/>.</summary>
    public Tensor? PromptEmbeds { get; init; }

    /// <summary>The mask of <see cref="PromptEmbeds"/> [B, S] (1 = token, 0 = padding).</summary>
    public Tensor? PromptAttentionMask { get; init; }

    /// <summary>Negative embeddings [B, S', caption_channels]; needs <see cref="NegativePromptAttentionMask"/>.</summary>
    public Tensor? NegativePromptEmbeds { get; init; }

    /// <summary>The mask of <see cref="NegativePromptEmbeds"/> [B, S'].</summary>
    public Tensor? NegativePromptAttentionMask { get; init; }

    /// <summary>The prompt's token count after the instruction is cut away (diffusers' default 300).</summary>
    public int MaxSequenceLength { get; init; } = 300;

    /// <summary>
    /// diffusers' <c>complex_human_instruction</c>: lines joined with "\n" and put in front of every prompt (not the
    /// negative one); the text encoder sees them, and only the first token and the last max_sequence_length - 1 positions
    /// are kept. Null is diffusers' default instruction (<see cref="Tokenizers.SanaPromptTokens.DefaultComplexHumanInstruction"/>),
    /// an empty list none.
    /// </summary>
    public IReadOnlyList<string>? ComplexHumanInstruction { get; init; }

    /// <summary>diffusers' <c>clean_caption</c> (ftfy + BeautifulSoup). Not implemented: true is refused. diffusers'
    /// default is false: lower-case + strip.</summary>
    public bool CleanCaption { get; init; }

    /// <summary>
    /// diffusers' <c>use_resolution_binning</c> (true by default): the size snaps to the trained size of the closest
    /// aspect ratio (Sana's bins by the transformer's sample_size: 128 → 4096 px, 64 → 2048, 32 → 1024, 16 → 512), and
    /// the decoded image is resized and center-cropped back to the requested size. False runs the size as given
    /// (multiples of the VAE scale factor x the patch size).
    /// </summary>
    public bool UseResolutionBinning { get; init; } = true;

    /// <summary>What to return: images, NHWC / NCHW tensors, or the final latents.</summary>
    public OutputType OutputType { get; init; } = OutputType.Image;

    /// <summary>Called after every step (diffusers' <c>callback_on_step_end</c>); may replace the latents and the
    /// (CFG-concatenated) prompt embeddings, or interrupt.</summary>
    public Action<StepEndContext>? CallbackOnStepEnd { get; init; }
}
