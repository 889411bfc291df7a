using DiffusersSharp.Images;
using DiffusersSharp.Models;
using DiffusersSharp.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.ZImage;

/// <summary>
/// What diffusers' <c>ZImagePipeline</c> and <c>ZImageImg2ImgPipeline</c> share: prompts in Qwen3's chat template -> the
/// Qwen3 text encoder's second-to-last hidden states at each prompt's real tokens (<see cref="Qwen3PromptEncoder"/>), or
/// given embeddings: lists, one [L_i, D] per prompt, repeated per image -> latents [B, 16, H/8, W/8] (noise, or the noised image) -> FlowMatchEuler steps
/// (<c>sigma_min</c> set to 0, mu from the image token count) over the transformer, fed <c>(1000 − t) / 1000</c> and the
/// latents as a list of [16, 1, h, w] images; CFG (positive and negative samples in one transformer batch,
/// <c>pos + s · (pos − neg)</c>, optionally renormalized and cut off late in the schedule); the step takes the negated
/// prediction -> VAE decode (<c>latents / scaling + shift</c>).
/// </summary>
public abstract class ZImagePipelineBase : DiffusionPipelineBase<ZImageComponents>
{
    /// <summary>Takes a reference on <paramref name="components"/>; they are freed when the last pipeline using them is disposed.</summary>
    protected ZImagePipelineBase(ZImageComponents components) : base(components)
    {
        // diffusers: VaeImageProcessor(vae_scale_factor=vae_scale_factor * 2), its other settings the defaults.
        ImageProcessor = new VaeImageProcessor(new VaeImageProcessorConfig { VaeScaleFactor = components.Vae.VaeScaleFactor * 2 });
    }

    /// <summary>Image pre/post-processing (diffusers' <c>image_processor</c>, at twice the VAE scale factor).</summary>
    public VaeImageProcessor ImageProcessor { get; }

    /// <summary>The VAE's spatial scale factor (8).</summary>
    public int VaeScaleFactor => Components.Vae.VaeScaleFactor;

    /// <summary>Height and width must be multiples of this (twice the VAE scale factor: 16).</summary>
    public int SizeMultiple => VaeScaleFactor * 2;

    /// <summary>diffusers' default height and width (1024).</summary>
    public const int DefaultSize = 1024;

    /// <summary>diffusers' default number of steps (50).</summary>
    public const int DefaultSteps = 50;

    /// <summary>Called when a prompt is cut to <see cref="ZImageRequest.MaxSequenceLength"/> (tokenizer, untruncated length
    /// in tokens with Qwen3's chat template around the prompt, limit). diffusers cuts silently.</summary>
    public Action<string, int, int>? OnPromptTruncated { get; set; }

    /// <summary>Whether these components can encode prompt strings (the Qwen3 text encoder and its tokenizer are loaded).</summary>
    protected bool CanEncodePrompts => Components.TextEncoder is not null && Components.Tokenizer is not null;

    /// <summary>
    /// diffusers' <c>_encode_prompt</c> (<see cref="Qwen3PromptEncoder"/>): each prompt in Qwen3's chat template (user
    /// turn, generation prompt, thinking enabled), tokenized and cut to <paramref name="maxSequenceLength"/>, the text
    /// encoder's second-to-last hidden states, and for each prompt the rows of its real tokens: one [L_i, D] tensor per
    /// prompt, in the text encoder's dtype. Under model offload the text encoder comes to the device for it.
    /// </summary>
    /// <exception cref="InvalidOperationException">These components have no text encoder (<see cref="CanEncodePrompts"/>;
    /// requests are checked for that before any compute).</exception>
    protected IReadOnlyList<Tensor> EncodePrompt(IReadOnlyList<string> prompts, int maxSequenceLength, CancellationToken cancellationToken = default)
    {
        if (!CanEncodePrompts)
            throw new InvalidOperationException("These Z-Image components have no Qwen3 text encoder (LoadTextEncoders = false): pass prompt embeddings.");
        Components.Activate("text_encoder");
        var onTruncated = OnPromptTruncated;
        var encoder = new Qwen3PromptEncoder(Components.Tokenizer!, Components.TextEncoder!)
        {
            OnTruncated = onTruncated is null ? null : (length, limit) => onTruncated("tokenizer (Qwen2)", length, limit),
        };
        return encoder.Encode(prompts, maxSequenceLength, cancellationToken);
    }

    /// <summary>The request's prompt embeddings (given or encoded) and, under CFG, the negative ones (given, or encoded from
    /// the negative prompts, diffusers' "" per prompt by default), each list repeated per image
    /// (<c>[pe for pe in prompt_embeds for _ in range(n)]</c>) and moved to the device.</summary>
    private protected (IReadOnlyList<Tensor> Positive, IReadOnlyList<Tensor> Negative) EncodePrompts(ZImageRequest r, CancellationToken cancellationToken)
    {
        var device = Components.Device;
        var positive = r.PromptEmbeds ?? EncodePrompt(r.Prompt!.Value.Items, r.MaxSequenceLength, cancellationToken);
        IReadOnlyList<Tensor> negative = r.NegativePromptEmbeds
            ?? (r.GuidanceScale > 1
                ? EncodePrompt(r.NegativePrompt?.Items ?? Enumerable.Repeat("", positive.Count).ToArray(), r.MaxSequenceLength, cancellationToken)
                : []);
        IReadOnlyList<Tensor> Repeat(IReadOnlyList<Tensor> list) =>
            list.SelectMany(e => Enumerable.Repeat(e.to(device), r.NumImagesPerPrompt)).ToArray();
        return (Repeat(positive), Repeat(negative));
    }

    /// <summary>The prompt count of a request (embedding tensors or prompt strings).</summary>
    private protected static int PromptCount(ZImageRequest r) => r.PromptEmbeds?.Count ?? r.Prompt!.Value.Count;

    /// <summary>The latent height and width: <c>2 · (size / 16)</c>.</summary>
    private protected (int Height, int Width) LatentSize(int height, int width) => (2 * (height / SizeMultiple), 2 * (width / SizeMultiple));

    /// <summary>Validates what both Z-Image pipelines take, before any compute (diffusers' checks, and what would fail
    /// later in its call: counts, shapes, RoPE range).</summary>
    private protected void CheckInputs(ZImageRequest r, int height, int width)
    {
        static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
        var config = Components.Transformer.Config;
        int multiple = SizeMultiple;
        if (height <= 0 || width <= 0 || height % multiple != 0 || width % multiple != 0)
            throw new ArgumentException($"height and width must be positive multiples of {multiple}, got {height}x{width} (try {Math.Max(multiple, height - height % multiple)}x{Math.Max(multiple, width - width % multiple)}).");
        if (r.NumInferenceSteps is < 1)
            throw new ArgumentException($"num_inference_steps must be at least 1, got {r.NumInferenceSteps}.");
        if (r.Sigmas is { Length: 0 })
            throw new ArgumentException("sigmas must not be empty.");
        if (r.Sigmas is { } sigmas && sigmas.Any(s => !float.IsFinite(s)))
            throw new ArgumentException("sigmas must be finite numbers.");
        if (r.Sigmas is not null && r.NumInferenceSteps is int n && n != r.Sigmas.Length)
            throw new ArgumentException($"{r.Sigmas.Length} sigmas were given for {n} inference steps.");
        if (!double.IsFinite(r.GuidanceScale))
            throw new ArgumentException($"guidance_scale must be a finite number, got {r.GuidanceScale}.");
        if (!(r.CfgNormalization >= 0) || double.IsInfinity(r.CfgNormalization))
            throw new ArgumentException($"cfg_normalization must be a finite number of at least 0 (0 turns it off, 1 is diffusers' True), got {r.CfgNormalization}.");
        if (double.IsNaN(r.CfgTruncation))
            throw new ArgumentException("cfg_truncation must be a number (values above 1 never cut CFG off).");
        if (r.NumImagesPerPrompt < 1)
            throw new ArgumentException($"num_images_per_prompt must be at least 1, got {r.NumImagesPerPrompt}.");
        if (r.MaxSequenceLength < 1)
            throw new ArgumentException($"max_sequence_length must be at least 1, got {r.MaxSequenceLength}.");
        if (r.OutputType is not (OutputType.Image or OutputType.Numpy or OutputType.Tensor or OutputType.Latent))
            throw new ArgumentException($"Unknown output type {r.OutputType}.");
        if (r.PromptEmbeds is not null && r.Prompt is not null)
            throw new ArgumentException("Give either a prompt or prompt_embeds, not both.");
        if (r.PromptEmbeds is null && (r.Prompt is null || r.Prompt.Value.Count == 0))
            throw new ArgumentException("Give a prompt or prompt_embeds.");
        if (r.NegativePromptEmbeds is not null && r.NegativePrompt is not null)
            throw new ArgumentException("Give either a negative prompt or negative_prompt_embeds, not both.");
        bool cfg = r.GuidanceScale > 1;
        if (r.PromptEmbeds is not null && r.Prompt is null && cfg && r.NegativePromptEmbeds is null && r.NegativePrompt is null)
            throw new ArgumentException("When prompt_embeds are given without a prompt, negative_prompt_embeds must be given too for classifier-free guidance (guidance_scale > 1), as diffusers requires.");
        bool needsEncoder = r.PromptEmbeds is null || (cfg && r.NegativePromptEmbeds is null);
        if (needsEncoder && !CanEncodePrompts)
            throw new ArgumentException("Z-Image prompt strings need the Qwen3 text encoder, which these components do not have (loaded with " +
                "LoadTextEncoders = false, or built without one): pass prompt_embeds (one [L, " + config.CapFeatDim + "] tensor per prompt) and, " +
                "with guidance above 1, negative_prompt_embeds.");
        int prompts = PromptCount(r);
        if (r.NegativePrompt is { } np && np.Count != prompts)
            throw new ArgumentException($"{np.Count} negative prompts were given for {prompts} prompts; give one per prompt (diffusers asserts equal counts).");
        var (latentH, latentW) = LatentSize(height, width);
        void CheckEmbeds(IReadOnlyList<Tensor> list, string name)
        {
            for (int i = 0; i < list.Count; i++)
            {
                var e = list[i] ?? throw new ArgumentException($"{name}[{i}] is null.");
                if (e.dim() != 2 || e.shape[0] < 1 || e.shape[1] != config.CapFeatDim || !e.is_floating_point())
                    throw new ArgumentException($"{name}[{i}] must be a floating-point [L, {config.CapFeatDim}] tensor with at least one token (the transformer's cap_feat_dim), got {Shape(e)} {e.dtype}.");
                if (Components.Transformer.RopeRangeProblem(e.shape[0], 1, latentH / 2, latentW / 2) is { } problem)
                    throw new ArgumentException($"{name}[{i}]: {problem}");
            }
        }
        if (r.PromptEmbeds is { } pe)
        {
            if (pe.Count == 0) throw new ArgumentException("prompt_embeds is an empty list.");
            CheckEmbeds(pe, "prompt_embeds");
        }
        if (r.NegativePromptEmbeds is { } ne)
        {
            if (ne.Count != prompts)
                throw new ArgumentException($"{ne.Count} negative_prompt_embeds were given for {prompts} prompts; give one per prompt.");
            CheckEmbeds(ne, "negative_prompt_embeds");
        }
        if (r.Generator is not null && r.Generators is not null)
            throw new ArgumentException("Give one generator or a list of generators, not both.");
        int batch = prompts * r.NumImagesPerPrompt;
        if (r.Generators is { } generators && generators.Count != batch)
            throw new ArgumentException($"{generators.Count} generators were given for a batch of {batch} (prompts x images per prompt).");
        long[] latentShape = [batch, config.InChannels, latentH, latentW];
        if (r.Latents is { } l && !l.shape.SequenceEqual(latentShape))
            throw new ArgumentException($"latents must be [{string.Join(", ", latentShape)}] for this request, got {Shape(l)}.");
    }

    /// <summary>
    /// A scheduler for one call with its timesteps set as diffusers' Z-Image pipelines do: <c>sigma_min = 0</c>, then
    /// <c>retrieve_timesteps</c> with the request's sigmas or step count and mu from <paramref name="imageSeqLen"/>
    /// (<c>calculate_shift</c> with the config's values; used only with dynamic shifting).
    /// </summary>
    private protected FlowMatchEulerDiscreteScheduler CreateScheduler(ZImageRequest r, int imageSeqLen)
    {
        var config = Components.SchedulerConfig;
        var scheduler = new FlowMatchEulerDiscreteScheduler(config) { SigmaMin = 0.0 };
        double mu = FlowMatchEulerDiscreteScheduler.CalculateShift(imageSeqLen, config.BaseImageSeqLen, config.MaxImageSeqLen, config.BaseShift, config.MaxShift);
        int steps = r.Sigmas?.Length ?? r.NumInferenceSteps ?? DefaultSteps;
        scheduler.SetTimesteps(steps, Components.Device, r.Sigmas, mu);
        return scheduler;
    }

    /// <summary>
    /// The denoising loop over <paramref name="timesteps"/> (the schedule or its strength tail): per step the normalized
    /// time <c>(1000 − t) / 1000</c>, CFG unless cut off, the transformer on the list of latents, the negated prediction
    /// into the scheduler step, then the callback. Each step runs in its own dispose scope; cancellation is checked
    /// between steps.
    /// </summary>
    private protected Tensor Denoise(Tensor latents, IReadOnlyList<Tensor> positive, IReadOnlyList<Tensor> negative,
        FlowMatchEulerDiscreteScheduler scheduler, Tensor timesteps, ZImageRequest r, IProgress<PipelineProgress>? progress, CancellationToken ct)
    {
        var transformer = Components.Transformer;
        int total = (int)timesteps.shape[0];
        double guidance = r.GuidanceScale;
        Components.Activate("transformer");
        progress?.Report(new PipelineProgress("denoise", 0, total));
        for (int i = 0; i < total; i++)
        {
            ct.ThrowIfCancellationRequested();
            var t = timesteps[i];
            using (var stepScope = NewDisposeScope())
            {
                long batch = latents.shape[0];
                var timestep = (1000 - t.expand(batch)) / 1000;
                double tNorm = timestep[0].item<float>();
                bool cfg = guidance > 1;
                double current = cfg && r.CfgTruncation <= 1 && tNorm > r.CfgTruncation ? 0.0 : guidance;
                bool applyCfg = cfg && current > 0;
                if (applyCfg && negative.Count != positive.Count)
                    throw new InvalidOperationException($"Guidance {guidance} needs one negative embedding per sample, but this call has {negative.Count} for {positive.Count} (a step callback raised the guidance scale?).");
                var typed = latents.to(transformer.Dtype);
                var input = (applyCfg ? typed.repeat(2, 1, 1, 1) : typed).unsqueeze(2).unbind(0);
                var captions = applyCfg ? positive.Concat(negative).ToArray() : positive;
                var output = transformer.forward(input, applyCfg ? timestep.repeat(2) : timestep, captions);
                Tensor prediction;
                if (applyCfg)
                {
                    var guided = new Tensor[batch];
                    for (int j = 0; j < batch; j++)
                    {
                        var pos = output[j].to(ScalarType.Float32);
                        var neg = output[(int)batch + j].to(ScalarType.Float32);
                        var pred = pos + (pos - neg) * current;
                        if (r.CfgNormalization > 0)
                        {
                            // Renormalization: the guided prediction's norm at most cfg_normalization x the positive one's.
                            var maxNorm = linalg.vector_norm(pos) * r.CfgNormalization;
                            var newNorm = linalg.vector_norm(pred);
                            if ((newNorm > maxNorm).item<bool>()) pred = pred * (maxNorm / newNorm);
                        }
                        guided[j] = pred;
                    }
                    prediction = stack(guided, 0);
                }
                else prediction = stack(output.Select(o => o.to(ScalarType.Float32)).ToArray(), 0);
                prediction = -prediction.squeeze(2);
                var next = scheduler.Step(prediction, t, latents);
                next.MoveToOuterDisposeScope();
                latents.Dispose();
                latents = next;
            }
            progress?.Report(new PipelineProgress("denoise", i + 1, total));
            if (r.CallbackOnStepEnd is { } callback)
            {
                using var shown = PadSequence(positive);
                var context = new StepEndContext
                {
                    Step = i, TotalSteps = total, Timestep = t.item<float>(), Latents = latents, PromptEmbeds = shown,
                    PromptEmbedsList = positive, NegativePromptEmbedsList = negative, GuidanceScale = guidance,
                };
                callback(context);
                if (!ReferenceEquals(context.PromptEmbeds, shown))
                    throw new InvalidOperationException("Z-Image prompt embeddings are a list of different lengths: replace StepEndContext.PromptEmbedsList, not PromptEmbeds.");
                latents = StepEndContext.Adopt(latents, context.Latents);
                positive = AdoptList(positive, context.PromptEmbedsList, "PromptEmbedsList");
                negative = AdoptList(negative, context.NegativePromptEmbedsList, "NegativePromptEmbedsList");
                guidance = context.GuidanceScale;
                if (context.Interrupt) break;
            }
        }
        return latents;
    }

    /// <summary>What the loop continues with after a callback: the list it had, or the callback's (same count, each tensor
    /// adopted as <see cref="StepEndContext.Adopt"/> does).</summary>
    private static IReadOnlyList<Tensor> AdoptList(IReadOnlyList<Tensor> current, IReadOnlyList<Tensor>? replacement, string name)
    {
        if (replacement is null || ReferenceEquals(current, replacement)) return current;
        if (replacement.Count != current.Count)
            throw new InvalidOperationException($"The step callback replaced {name} ({current.Count} tensors) with {replacement.Count}; keep one per sample.");
        return replacement.Select((e, i) => StepEndContext.Adopt(current[i], e)).ToArray();
    }

    /// <summary>The embeddings zero-padded to the longest: [B, L_max, D] (what <see cref="StepEndContext.PromptEmbeds"/> shows).</summary>
    private static Tensor PadSequence(IReadOnlyList<Tensor> items)
    {
        using var scope = NewDisposeScope();
        long max = items.Max(e => e.shape[0]);
        var padded = stack(items.Select(e => e.shape[0] == max ? e : cat([e, zeros([max - e.shape[0], e.shape[1]], e.dtype, e.device)], 0)).ToArray(), 0);
        return padded.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Decodes the final latents to the requested output (diffusers: <c>latents / scaling_factor + shift_factor</c>, VAE
    /// decode, postprocess); the end of every call: under model offload the last model goes back to the CPU afterwards.
    /// </summary>
    private protected ZImageOutput Decode(Tensor latents, OutputType outputType, IProgress<PipelineProgress>? progress) =>
        DecodeAndFinish(progress, () => DecodeOnDevice(latents, outputType));

    /// <summary>
    /// Decodes intermediate latents [B, 16, H/8, W/8] (e.g. <see cref="StepEndContext.Latents"/> in a step callback) to
    /// images, as a preview of the generation so far. Under model offload the VAE comes to the device for it and the
    /// transformer goes back after.
    /// </summary>
    public IReadOnlyList<ImageBuffer> PreviewImages(Tensor latents) =>
        DecodePreview(latents, () => DecodeOnDevice(latents, OutputType.Image).Images!);

    private ZImageOutput DecodeOnDevice(Tensor latents, OutputType outputType)
    {
        if (outputType == OutputType.Latent) return new ZImageOutput(null, latents.alias().DetachFromDisposeScope());
        Components.Activate("vae");
        using var scope = NewDisposeScope();
        var vae = Components.Vae;
        var scaled = latents.to(vae.WeightDtype()) / vae.Config.ScalingFactor + (vae.Config.ShiftFactor ?? 0.0);
        var decoded = vae.Decode(scaled);
        var (images, tensor) = DecodedOutput.From(decoded, outputType, ImageProcessor);
        return new ZImageOutput(images, tensor);
    }
}
