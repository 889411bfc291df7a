using DiffusersSharp.Images;
using DiffusersSharp.Models;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.AuraFlow;

/// <summary>
/// Text-to-image with AuraFlow (diffusers' <c>AuraFlowPipeline</c>; e.g. fal/AuraFlow-v0.3): prompt -> tokens padded to
/// max_sequence_length -> the UMT5 encoder's last hidden state with the padded positions zeroed (the negative prompt, ""
/// by default, at the prompt embeddings' length) -> noise [B, 4, H/8, W/8] in the embeddings' dtype -> FlowMatchEuler
/// steps over the transformer (CFG on the batched negative + positive halves, fed <c>t / 1000</c>) -> VAE decode
/// (<c>latents / scaling_factor</c>; a float16 VAE with force_upcast decodes in float32, as diffusers' upcast_vae).
/// </summary>
public sealed class AuraFlowPipeline : DiffusionPipelineBase<AuraFlowComponents>
{
    /// <summary>Wraps loaded components (taking a reference on them; they are freed when the last user is done).</summary>
    public AuraFlowPipeline(AuraFlowComponents components) : base(components)
    {
        ImageProcessor = new VaeImageProcessor(new VaeImageProcessorConfig { VaeScaleFactor = components.Vae.VaeScaleFactor });
    }

    /// <summary>Loads a diffusers AuraFlow pipeline folder or hub repo id.</summary>
    public static AuraFlowPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = AuraFlowComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new AuraFlowPipeline(components);
    }

    /// <summary>Image post-processing (diffusers' <c>image_processor</c>).</summary>
    public VaeImageProcessor ImageProcessor { get; }

    /// <summary>The VAE's spatial scale factor (8).</summary>
    public int VaeScaleFactor => Components.Vae.VaeScaleFactor;

    /// <summary>Height and width must be multiples of this (twice the VAE scale factor: 16).</summary>
    public int SizeMultiple => VaeScaleFactor * 2;

    /// <summary>Called when a prompt is cut to the token limit (tokenizer, untruncated length, limit). diffusers logs a
    /// warning.</summary>
    public Action<string, int, int>? OnPromptTruncated { get; set; }

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public ImagePipelineOutput Generate(AuraFlowRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        var r = request;
        CheckInputs(r);
        using var mode = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        var transformer = Components.Transformer;
        bool cfg = r.GuidanceScale > 1.0;

        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (embeds, negEmbeds) = EncodeCore(r, cfg);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        if (cfg) embeds = cat([negEmbeds!, embeds], 0);

        using var scheduler = new FlowMatchEulerDiscreteScheduler(Components.SchedulerConfig);
        scheduler.SetTimesteps(r.Sigmas?.Length ?? r.NumInferenceSteps, device, r.Sigmas);
        var timesteps = scheduler.Timesteps;
        int total = (int)timesteps.shape[0];

        // diffusers draws the noise (or casts given latents) in prompt_embeds' dtype.
        var latents = r.Latents is { } given
            ? given.to(embeds.dtype, device)
            : RandomDraws.Randn(LatentShape(r), r.Generator, r.Generators, embeds.dtype, device);
        double guidance = r.GuidanceScale;
        Components.Activate("transformer");
        progress?.Report(new PipelineProgress("denoise", 0, total));
        for (int i = 0; i < total; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var t = timesteps[i];
            using (var stepScope = NewDisposeScope())
            {
                var input = cfg ? cat([latents, latents], 0) : latents;
                // AuraFlow's time: t / 1000 (1 = noise), in float32, then in the latents' dtype.
                var timestep = (t / 1000).reshape(1).expand(input.shape[0]).to(latents.dtype);
                var prediction = transformer.forward(input, embeds, timestep);
                if (cfg)
                {
                    var halves = prediction.chunk(2);
                    prediction = halves[0] + guidance * (halves[1] - halves[0]);
                }
                var next = scheduler.Step(prediction, t, latents);
                next.MoveToOuterDisposeScope();
                latents.Dispose();
                latents = next;
            }
            progress?.Report(new PipelineProgress("denoise", i + 1, total));
            if (StepEndContext.Run(r.CallbackOnStepEnd, i, total, t.item<float>(), guidance, ref latents, ref embeds)) break;
        }

        if (r.OutputType == OutputType.Latent)
            return new ImagePipelineOutput(null, latents.DetachFromDisposeScope());
        return DecodeAndFinish(progress, () => Decode(latents, r.OutputType));
    }

    /// <summary>
    /// diffusers' <c>encode_prompt</c> for <paramref name="request"/>: the UMT5 embeddings of the prompts with their padding
    /// zeroed (or the given embeddings), repeated for the images per prompt; with guidance (scale above 1) the negative side
    /// (the negative prompt, "" by default, at the prompt embeddings' length, or the given negative embeddings, repeated
    /// too). The tensors are the caller's.
    /// </summary>
    /// <exception cref="ArgumentException">The request is invalid (checked as the call checks it).</exception>
    public AuraFlowPromptEmbeddings EncodePrompt(AuraFlowRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        CheckInputs(request);
        using var mode = inference_mode();
        using var scope = NewDisposeScope();
        var (e, ne) = EncodeCore(request, request.GuidanceScale > 1.0);
        var result = new AuraFlowPromptEmbeddings(e, ne);
        e.MoveToOuterDisposeScope();
        ne?.MoveToOuterDisposeScope();
        return result;
    }

    /// <summary>
    /// Decodes intermediate latents [B, 4, H/8, W/8] (e.g. <see cref="StepEndContext.Latents"/> in a step callback) to
    /// images, as a preview of the generation so far. Under model offload the VAE comes to the device for it and the
    /// transformer goes back after.
    /// </summary>
    public IReadOnlyList<ImageBuffer> PreviewImages(Tensor latents) =>
        DecodePreview(latents, () => Decode(latents, OutputType.Image).Images!);

    private long PromptCount(AuraFlowRequest r) => r.PromptEmbeds?.shape[0] ?? r.Prompt?.Count ?? 0;

    private long[] LatentShape(AuraFlowRequest r) =>
        [PromptCount(r) * r.NumImagesPerPrompt, Components.Transformer.Config.InChannels, r.Height / VaeScaleFactor, r.Width / VaeScaleFactor];

    /// <summary>Validates the request before any compute (diffusers' check_inputs, and what would fail later in its call).</summary>
    private void CheckInputs(AuraFlowRequest r)
    {
        static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
        var config = Components.Transformer.Config;
        if (r.Height <= 0 || r.Width <= 0 || r.Height % SizeMultiple != 0 || r.Width % SizeMultiple != 0)
            throw new ArgumentException($"height and width must be positive multiples of {SizeMultiple}, got {r.Height}x{r.Width}.");
        // The patch grid within the transformer's learned position grid (diffusers reads wrong table rows past it).
        Components.Transformer.ValidateLatentShape([1, config.InChannels, r.Height / VaeScaleFactor, r.Width / VaeScaleFactor], "height and width");
        if (r.NumInferenceSteps < 1 && r.Sigmas is null)
            throw new ArgumentException($"num_inference_steps must be at least 1, got {r.NumInferenceSteps}.");
        if (r.Sigmas is { Length: 0 })
            throw new ArgumentException("sigmas must not be empty.");
        if (r.Sigmas is { } sigmas && sigmas.Any(s => !float.IsFinite(s)))
            throw new ArgumentException("sigmas must be finite numbers.");
        if (Components.SchedulerConfig.UseDynamicShifting)
            throw new ArgumentException("The scheduler config sets use_dynamic_shifting, but AuraFlowPipeline passes no mu (diffusers fails on it too).");
        if (!double.IsFinite(r.GuidanceScale))
            throw new ArgumentException($"guidance_scale must be a finite number, got {r.GuidanceScale}.");
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
        if (r.PromptEmbeds is { } e && (e.dim() != 3 || e.shape[0] < 1 || e.shape[1] < 1 || e.shape[2] != config.JointAttentionDim || !e.is_floating_point()))
            throw new ArgumentException($"prompt_embeds must be a floating-point [B, S, {config.JointAttentionDim}] tensor (the transformer's joint_attention_dim), got {Shape(e)}.");
        if (r.NegativePromptEmbeds is { } ne)
        {
            if (r.PromptEmbeds is null)
                throw new ArgumentException("negative_prompt_embeds go with prompt_embeds (diffusers compares their shapes).");
            if (!ne.shape.SequenceEqual(r.PromptEmbeds.shape))
                throw new ArgumentException($"prompt_embeds {Shape(r.PromptEmbeds)} and negative_prompt_embeds {Shape(ne)} must have the same shape.");
        }
        bool cfg = r.GuidanceScale > 1;
        bool needsEncoder = r.PromptEmbeds is null || (cfg && r.NegativePromptEmbeds is null);
        if (needsEncoder && (Components.TextEncoder is null || Components.Tokenizer is null))
            throw new ArgumentException("These components have no UMT5 text encoder: pass prompt_embeds (and, with guidance, negative_prompt_embeds).");
        long prompts = PromptCount(r);
        if (r.NegativePrompt is { } np && np.Count != 1 && np.Count != prompts)
            throw new ArgumentException($"{np.Count} negative prompts were given for {prompts} prompts.");
        if (r.Generator is not null && r.Generators is not null)
            throw new ArgumentException("Give one generator or a list of generators, not both.");
        var latentShape = LatentShape(r);
        if (r.Generators is { } generators && generators.Count != latentShape[0])
            throw new ArgumentException($"{generators.Count} generators were given for a batch of {latentShape[0]} (prompts x images per prompt).");
        if (r.Latents is { } l && !l.shape.SequenceEqual(latentShape))
            throw new ArgumentException($"latents must be [{string.Join(", ", latentShape)}] for this request, got {Shape(l)}.");
    }

    /// <summary>The body of <see cref="EncodePrompt(AuraFlowRequest)"/>, inside the caller's scope.</summary>
    private (Tensor Embeds, Tensor? NegEmbeds) EncodeCore(AuraFlowRequest r, bool cfg)
    {
        var device = Components.Device;
        // diffusers: the text encoder's dtype, else the transformer's.
        var dtype = Components.TextEncoder?.WeightDtype() ?? Components.Transformer.Dtype;
        var embeds = (r.PromptEmbeds ?? EncodeText(r.Prompt!.Value.Items, r.MaxSequenceLength)).to(dtype, device);
        long batch = embeds.shape[0], length = embeds.shape[1];
        int n = r.NumImagesPerPrompt;
        var e = embeds.repeat(1, n, 1).view(batch * n, length, -1);
        if (!cfg) return (e, null);
        // The negative prompt is cut / padded to the prompt embeddings' length.
        var negative = r.NegativePromptEmbeds
            ?? EncodeText((r.NegativePrompt ?? "").Broadcast((int)batch, "negative prompts"), (int)length);
        var ne = negative.to(dtype, device).repeat(1, n, 1).view(batch * n, length, -1);
        return (e, ne);
    }

    /// <summary>Texts -> ids padded to <paramref name="maxLength"/> on the tokenizer's side and their mask -> UMT5's last
    /// hidden state with the padded positions zeroed (<c>prompt_embeds * attention_mask</c>).</summary>
    private Tensor EncodeText(IReadOnlyList<string> texts, int maxLength)
    {
        // transformers pads where the tokenizer says: LlamaTokenizerFast on the left unless tokenizer_config.json sets
        // padding_side (AuraFlowPipeline sets none), T5's tokenizers on the right.
        var batch = Components.Tokenizer switch
        {
            LlamaTokenizer llama => llama.EncodeBatch(texts, maxLength, truncate: true),
            var other => TokenLayout.Batch(texts, t => other!.Encode(t, maxLength, padToMaxLength: false, truncate: true), maxLength, other!.PadTokenId, PaddingSide.Right),
        };
        for (int i = 0; i < batch.Count; i++)
            if (batch.Lengths[i] < batch.UntruncatedLengths[i]) OnPromptTruncated?.Invoke("tokenizer", batch.UntruncatedLengths[i], batch.Width);
        var device = Components.Device;
        var ids = tensor(batch.Ids, [batch.Count, batch.Width], device: device);
        var mask = tensor(batch.Mask, [batch.Count, batch.Width], device: device);
        Components.Activate("text_encoder");
        var hidden = Components.TextEncoder!.Forward(ids, mask);
        return hidden * mask.unsqueeze(-1);
    }

    /// <summary>The VAE decode (<c>latents / scaling_factor</c>, in float32 for a float16 VAE with force_upcast) and the
    /// output form.</summary>
    private ImagePipelineOutput Decode(Tensor latents, OutputType outputType)
    {
        Components.Activate("vae");
        var vae = Components.Vae;
        bool upcast = vae.WeightDtype() == ScalarType.Float16 && vae.Config.ForceUpcast;
        return ModuleMover.RunIn(vae, upcast ? ScalarType.Float32 : vae.WeightDtype(), () =>
        {
            using var scope = NewDisposeScope();
            var decoded = vae.Decode(latents.to(vae.WeightDtype()) / vae.Config.ScalingFactor);
            var (images, output) = DecodedOutput.From(decoded, outputType, ImageProcessor);
            return new ImagePipelineOutput(images, output);
        });
    }
}
