using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines;

/// <summary>
/// What a per-step callback sees after each denoising step (diffusers' <c>callback_on_step_end</c>): it may read and
/// replace the latents and embeddings, or stop the loop (<c>pipe.interrupt</c>). A replaced tensor is owned by the pipeline
/// from then on. The callback runs inside the pipeline call's dispose scope: a tensor it wants to keep after the call
/// must be detached (<c>latents.clone().DetachFromDisposeScope()</c>).
/// </summary>
public sealed class StepEndContext
{
    /// <summary>The index of the step just finished (0-based).</summary>
    public required int Step { get; init; }

    /// <summary>Number of steps this call runs.</summary>
    public required int TotalSteps { get; init; }

    /// <summary>The step's timestep (SD3: sigma x 1000; UNet pipelines: the scheduler's timestep).</summary>
    public required float Timestep { get; init; }

    /// <summary>The latents after the step; assign to replace them.</summary>
    public required Tensor Latents { get; set; }

    /// <summary>The prompt embeddings (with the negative half first under CFG); assign to replace them.</summary>
    public required Tensor PromptEmbeds { get; set; }

    /// <summary>Z-Image: the prompt embeddings as diffusers' list, one [L_i, D] per image (prompts × images per prompt, each
    /// of its own length; <see cref="PromptEmbeds"/> then shows them zero-padded to the longest, and is not to be replaced);
    /// null elsewhere. Assign to replace them.</summary>
    public IReadOnlyList<Tensor>? PromptEmbedsList { get; set; }

    /// <summary>Z-Image: the negative prompt embeddings likewise (empty without CFG); null elsewhere. Assign to replace them.</summary>
    public IReadOnlyList<Tensor>? NegativePromptEmbedsList { get; set; }

    /// <summary>CogView4: the negative prompt embeddings, which CFG runs in a transformer call of their own (they may be
    /// longer or shorter than the prompt's); null elsewhere and without guidance. Assign to replace them.</summary>
    public Tensor? NegativePromptEmbeds { get; set; }

    /// <summary>The pooled prompt embeddings (negative half first under CFG; SDXL's add_text_embeds); null for models
    /// without them (SD 1.x / 2.x). Assign to replace them.</summary>
    public Tensor? PooledPromptEmbeds { get; set; }

    /// <summary>SDXL's add_time_ids, [batch (x2 under CFG, negatives first), 5 or 6]; null for models without them.
    /// Assign to replace them.</summary>
    public Tensor? AddTimeIds { get; set; }

    /// <summary>The inpainting mask at latent size (inpaint only); assign to replace it.</summary>
    public Tensor? Mask { get; set; }

    /// <summary>The LCM pipelines: the step's denoised estimate (the last one is the result); null elsewhere. Assign to
    /// replace it.</summary>
    public Tensor? Denoised { get; set; }

    /// <summary>Guidance-distilled UNets: the guidance-scale embedding passed as <c>timestep_cond</c> (diffusers'
    /// <c>w_embedding</c>); null elsewhere. Assign to replace it.</summary>
    public Tensor? TimestepCond { get; set; }

    /// <summary>The guidance scale used from the next step on; set to 1 or below to drop CFG (as SD3CFGCutoffCallback does).</summary>
    public double GuidanceScale { get; set; }

    /// <summary>Set to stop after this step; the result is decoded from the current latents.</summary>
    public bool Interrupt { get; set; }

    /// <summary>
    /// What a pipeline continues with after the callback: <paramref name="current"/> if the callback left it, else an alias
    /// of the callback's replacement, owned by the call's dispose scope like the pipeline's own tensors.
    /// </summary>
    internal static Tensor Adopt(Tensor current, Tensor replacement) =>
        ReferenceEquals(current, replacement) ? current : replacement.alias();

    /// <summary>
    /// Runs <paramref name="callback"/> (when given) after step <paramref name="step"/> with the latents and prompt
    /// embeddings, adopting what it replaced; true when it asked to interrupt. For the pipelines whose callbacks see
    /// only those two tensors (PixArt, Sana).
    /// </summary>
    internal static bool Run(Action<StepEndContext>? callback, int step, int totalSteps, float timestep, double guidanceScale,
        ref Tensor latents, ref Tensor promptEmbeds)
    {
        if (callback is null) return false;
        var context = new StepEndContext
        {
            Step = step, TotalSteps = totalSteps, Timestep = timestep, Latents = latents, PromptEmbeds = promptEmbeds,
            GuidanceScale = guidanceScale,
        };
        callback(context);
        latents = Adopt(latents, context.Latents);
        promptEmbeds = Adopt(promptEmbeds, context.PromptEmbeds);
        return context.Interrupt;
    }
}

/// <summary>Progress of a pipeline call.</summary>
/// <param name="Stage">"encode", "denoise" or "decode".</param>
/// <param name="Step">Steps done in this stage.</param>
/// <param name="TotalSteps">Steps in this stage.</param>
public readonly record struct PipelineProgress(string Stage, int Step, int TotalSteps);
