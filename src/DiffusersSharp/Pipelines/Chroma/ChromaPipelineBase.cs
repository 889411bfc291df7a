using DiffusersSharp.Images;
using DiffusersSharp.Models;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Chroma;

/// <summary>
/// What ChromaPipeline and ChromaImg2ImgPipeline share (diffusers' <c>pipeline_chroma.py</c> and
/// <c>pipeline_chroma_img2img.py</c>): prompt -> T5 ids and the tokenizer's mask -> T5 under that mask -> the
/// transformer's text mask (the prompt's tokens and one padding token kept) -> noise drawn at [B, 16, 2·(H/16), 2·(W/16)]
/// and packed into 2×2 patches as FLUX's (or the image's VAE latents noised to the strength's first timestep) ->
/// flow-matching Euler steps with FLUX's resolution-dependent shift over the transformer, with real classifier-free
/// guidance (a second pass on the negative prompt; <c>neg + g · (pos − neg)</c>) and the text mask extended over the
/// image tokens -> unpack -> VAE decode of <c>latents / scaling_factor + shift_factor</c>.
/// </summary>
public abstract class ChromaPipelineBase : DiffusionPipelineBase<ChromaComponents>
{
    /// <summary>Takes a reference on <paramref name="components"/>; they are freed when the last pipeline using them is disposed.</summary>
    protected ChromaPipelineBase(ChromaComponents components) : base(components)
    {
        // diffusers: vae_scale_factor * 2, since the packing doubles the latent granularity.
        ImageProcessor = new VaeImageProcessor(new VaeImageProcessorConfig
        {
            VaeScaleFactor = components.Vae.VaeScaleFactor * 2, VaeLatentChannels = components.Vae.Config.LatentChannels,
        });
    }

    /// <summary>Image pre/post-processing (diffusers' <c>image_processor</c>).</summary>
    public VaeImageProcessor ImageProcessor { get; }

    /// <summary>Called when a prompt is cut to the T5 limit (tokenizer, untruncated length, limit).</summary>
    public Action<string, int, int>? OnPromptTruncated { get; set; }

    /// <summary>The VAE's spatial scale factor (8).</summary>
    public int VaeScaleFactor => Components.Vae.VaeScaleFactor;

    /// <summary>Default height and width: diffusers' default_sample_size 128 × the VAE scale factor (1024).</summary>
    public int DefaultSize => 128 * VaeScaleFactor;

    /// <summary>The output height and width of <paramref name="request"/> (its own, or the default 1024).</summary>
    public (int Height, int Width) OutputSizeOf(ChromaRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return (request.Height ?? DefaultSize, request.Width ?? DefaultSize);
    }

    /// <summary>
    /// Chroma's text mask for the transformer from the tokenizer's <c>attention_mask</c> [B, S] (1 on the kept tokens,
    /// 0 on the padding), as diffusers' <c>_get_t5_prompt_embeds</c> builds it: position j is kept when
    /// <c>j ≤ sum(mask)</c>, i.e. the prompt's tokens and the first padding token (all of them when nothing is padded), in
    /// <paramref name="dtype"/> (the pipeline uses the T5 dtype, which makes it an additive mask in the attention).
    /// </summary>
    public static Tensor TransformerTextMask(Tensor tokenizerMask, ScalarType dtype)
    {
        ArgumentNullException.ThrowIfNull(tokenizerMask);
        if (tokenizerMask.dim() != 2) throw new ArgumentException($"The tokenizer mask must be [B, S], got [{string.Join(", ", tokenizerMask.shape)}].", nameof(tokenizerMask));
        using var scope = NewDisposeScope();
        var lengths = tokenizerMask.sum(1, type: ScalarType.Int64).unsqueeze(1);
        var positions = arange(tokenizerMask.shape[1], dtype: ScalarType.Int64, device: tokenizerMask.device).unsqueeze(0);
        return positions.le(lengths).to(dtype).MoveToOuterDisposeScope();
    }

    /// <summary>One side of the guidance as the transformer takes it: embeddings, the text mask, zero text ids.</summary>
    private sealed record EncodedSide(Tensor Embeds, Tensor Mask, Tensor TextIds);

    /// <summary>
    /// Text-to-image (<paramref name="img2img"/> null, diffusers' <c>ChromaPipeline</c>) or image-to-image (diffusers'
    /// <c>ChromaImg2ImgPipeline</c>): validation, prompt encoding, latents, the denoising loop, decode.
    /// </summary>
    private protected ChromaOutput Run(ChromaRequest request, ChromaImg2ImgRequest? img2img, IProgress<PipelineProgress>? progress,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        var r = request;
        var (height, width) = OutputSizeOf(r);
        CheckInputs(r, height, width);
        if (img2img is not null) CheckImageToImage(img2img);
        int prompts = r.PromptEmbeds is { } pe ? (int)pe.shape[0] : r.Prompt!.Value.Count, batch = prompts * r.NumImagesPerPrompt;
        int channels = Components.Transformer.Config.InChannels / 4;
        var (latentH, latentW) = (2 * (height / (VaeScaleFactor * 2)), 2 * (width / (VaeScaleFactor * 2)));
        int imageTokens = (latentH / 2) * (latentW / 2);
        long[] packedShape = [batch, imageTokens, channels * 4];
        if (r.Latents is { } given && !given.shape.SequenceEqual(packedShape))
            throw new ArgumentException($"latents must be packed [{string.Join(", ", packedShape)}], got [{string.Join(", ", given.shape)}].");

        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        // diffusers preprocesses the image even when latents are given (they then skip its encoding).
        var image = img2img?.Image?.Preprocess(ImageProcessor, height, width).to(ScalarType.Float32);
        if (image is not null) CheckImageTensor(image, batch, latentH, latentW);
        bool cfg = r.GuidanceScale > 1;
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var positive = r.PromptEmbeds is { } embeds ? Given(embeds, r.PromptAttentionMask!, r.NumImagesPerPrompt)
            : EncodeText(r.Prompt!.Value.Items, r.NumImagesPerPrompt, r.MaxSequenceLength);
        EncodedSide? negative = !cfg ? null : r.NegativePromptEmbeds is { } negEmbeds
            ? Given(negEmbeds, r.NegativePromptAttentionMask!, r.NumImagesPerPrompt)
            : EncodeText((r.NegativePrompt ?? "").Broadcast(prompts, "negative_prompt"), r.NumImagesPerPrompt, r.MaxSequenceLength);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        var dtype = positive.Embeds.dtype;
        var config = Components.SchedulerConfig;
        using var scheduler = new FlowMatchEulerDiscreteScheduler(config);
        var sigmas = r.Sigmas ?? FluxPipelineBase.DefaultSigmas(r.NumInferenceSteps ?? ChromaRequest.DefaultSteps);
        scheduler.SetTimesteps(sigmas.Length, device, sigmas, r.Mu ?? FluxPipelineBase.Mu(imageTokens, config));
        Tensor timesteps, latents;
        if (img2img is null)
        {
            scheduler.SetBeginIndex(0);
            timesteps = scheduler.Timesteps;
            latents = r.Latents is { } initial ? initial.to(dtype, device, copy: true)
                : FluxPipelineBase.PackLatents(RandomDraws.Randn([batch, channels, latentH, latentW], r.Generator, r.Generators, dtype, device));
        }
        else
        {
            timesteps = FluxPipelineBase.StrengthTimesteps(scheduler, img2img.Strength);
            if (r.Latents is { } initial) latents = initial.to(dtype, device, copy: true);
            else
            {
                // prepare_latents: the posterior sample, then the noise, scale_noise at the first kept timestep.
                var imageLatents = EncodeImage(image!, r, dtype, batch);
                var noise = RandomDraws.Randn([batch, channels, latentH, latentW], r.Generator, r.Generators, dtype, device);
                latents = FluxPipelineBase.PackLatents(scheduler.ScaleNoise(imageLatents, timesteps[..1].repeat(batch), noise));
            }
        }
        var imageIds = FluxPipelineBase.LatentImageIds(latentH / 2, latentW / 2, device, dtype);
        // _prepare_attention_mask: the text mask followed by ones for the image tokens. ChromaPipeline concatenates bool
        // ones (a float mask stays float, a bool mask bool); ChromaImg2ImgPipeline float ones and casts to the latents' dtype.
        Tensor JointMask(Tensor textMask) => img2img is null
            ? cat([textMask, ones(batch, imageTokens, dtype: textMask.dtype, device: device)], 1)
            : cat([textMask, ones(batch, imageTokens, dtype: ScalarType.Float32, device: device)], 1).to(dtype);
        var mask = JointMask(positive.Mask);
        var negativeMask = negative is null ? null : JointMask(negative.Mask);

        latents = Denoise(latents, positive with { Mask = mask }, negative is null ? null : negative with { Mask = negativeMask! }, imageIds,
            scheduler, timesteps, r, castTimestep: img2img is null, progress, cancellationToken);
        return Decode(latents, r.OutputType, height, width, progress);
    }

    /// <summary>
    /// The denoising loop over <paramref name="timesteps"/>: the transformer on the prompt side, under CFG also on the
    /// negative side, the scheduler step, the callback. Each step runs in its own dispose scope; cancellation is checked
    /// between steps. <paramref name="castTimestep"/>: ChromaPipeline casts the timestep to the latents' dtype before
    /// dividing by 1000, ChromaImg2ImgPipeline divides the float32 timestep.
    /// </summary>
    private Tensor Denoise(Tensor latents, EncodedSide positive, EncodedSide? negative, Tensor imageIds, FlowMatchEulerDiscreteScheduler scheduler,
        Tensor timesteps, ChromaRequest r, bool castTimestep, IProgress<PipelineProgress>? progress, CancellationToken ct)
    {
        var transformer = Components.Transformer;
        int total = (int)timesteps.shape[0];
        double guidance = r.GuidanceScale;
        Tensor embeds = positive.Embeds;
        Components.Activate("transformer");
        progress?.Report(new PipelineProgress("denoise", 0, total));
        for (int i = 0; i < total; i++)
        {
            ct.ThrowIfCancellationRequested();
            using (var stepScope = NewDisposeScope())
            {
                var t = timesteps[i];
                var expanded = t.expand(latents.shape[0]);
                var timestep = (castTimestep ? expanded.to(latents.dtype) : expanded) / 1000;
                var noisePred = transformer.forward(latents, embeds, timestep, imageIds, positive.TextIds, positive.Mask);
                if (negative is not null && guidance > 1)
                {
                    var negPred = transformer.forward(latents, negative.Embeds, timestep, imageIds, negative.TextIds, negative.Mask);
                    noisePred = negPred + guidance * (noisePred - negPred);
                }
                var next = scheduler.Step(noisePred, t, latents);
                next.MoveToOuterDisposeScope();
                latents.Dispose();
                latents = next;
            }
            progress?.Report(new PipelineProgress("denoise", i + 1, total));
            if (r.CallbackOnStepEnd is { } callback)
            {
                var context = new StepEndContext
                {
                    Step = i, TotalSteps = total, Timestep = timesteps[i].item<float>(), Latents = latents, PromptEmbeds = embeds,
                    GuidanceScale = guidance,
                };
                callback(context);
                latents = StepEndContext.Adopt(latents, context.Latents);
                embeds = StepEndContext.Adopt(embeds, context.PromptEmbeds);
                guidance = context.GuidanceScale;
                if (context.Interrupt) break;
            }
        }
        return latents;
    }

    /// <summary>Given embeddings and their text mask on the device, repeated for the images per prompt (adjacent copies);
    /// an integer mask becomes float (the embeddings' dtype).</summary>
    private EncodedSide Given(Tensor embeds, Tensor mask, int n)
    {
        var device = Components.Device;
        var e = embeds.to(device).repeat_interleave(n, dim: 0);
        var m = mask.to(device);
        if (m.dtype != ScalarType.Bool && !m.is_floating_point()) m = m.to(e.dtype);
        return new EncodedSide(e, m.repeat_interleave(n, dim: 0), TextIds(e.shape[1]));
    }

    /// <summary>
    /// diffusers' <c>_get_t5_prompt_embeds</c>: T5 ids padded to <paramref name="maxLength"/> and the tokenizer's mask ->
    /// T5 under that mask (in its dtype) -> the transformer's text mask (<see cref="TransformerTextMask"/>, in the T5 dtype),
    /// each repeated for the images per prompt.
    /// </summary>
    private EncodedSide EncodeText(IReadOnlyList<string> prompts, int n, int maxLength)
    {
        var tokenizer = Components.Tokenizer!;
        var encoder = Components.TextEncoder!;
        var (ids, tokenizerMask) = PromptTokens.IdsAndMask(tokenizer, prompts, maxLength, Components.Device, "tokenizer (T5)", OnPromptTruncated);
        Components.Activate("text_encoder");
        var dtype = encoder.WeightDtype();
        var embeds = encoder.Forward(ids, tokenizerMask).to(dtype);
        var mask = TransformerTextMask(tokenizerMask, dtype);
        return new EncodedSide(embeds.repeat_interleave(n, dim: 0), mask.repeat_interleave(n, dim: 0), TextIds(embeds.shape[1]));
    }

    /// <summary>diffusers' text ids: zeros [S, 3] in the T5 dtype (the transformer's without a text encoder).</summary>
    private Tensor TextIds(long length) =>
        zeros([length, 3], dtype: Components.TextEncoder?.WeightDtype() ?? Components.Transformer.Dtype, device: Components.Device);

    /// <summary>
    /// diffusers' <c>_encode_vae_image</c> and the batch repeat of <c>prepare_latents</c>: the VAE posterior sample drawn
    /// with the request's generator(s), <c>(latents − shift_factor) · scaling_factor</c>, repeated to the batch. A tensor
    /// with the latent channel count is taken as latents as is.
    /// </summary>
    private Tensor EncodeImage(Tensor image, ChromaRequest r, ScalarType dtype, int batch)
    {
        var device = Components.Device;
        var vae = Components.Vae;
        Tensor latents = image.to(dtype, device);
        if (image.shape[1] != vae.Config.LatentChannels)
        {
            Components.Activate("vae");
            var sample = RandomDraws.SampleVae(vae, latents, r.Generator, r.Generators, device);
            latents = (sample - (vae.Config.ShiftFactor ?? 0.0)) * vae.Config.ScalingFactor;
        }
        latents = latents.to(dtype);
        return batch > latents.shape[0] ? cat(Enumerable.Repeat(latents, (int)(batch / latents.shape[0])).ToArray(), 0) : latents;
    }

    /// <summary>
    /// Decodes the final packed latents to the requested output; the end of every call: under model offload the last
    /// model goes back to the CPU afterwards (diffusers' <c>maybe_free_model_hooks</c>).
    /// </summary>
    private ChromaOutput Decode(Tensor latents, OutputType outputType, int height, int width, IProgress<PipelineProgress>? progress) =>
        DecodeAndFinish(progress, () => DecodeOnDevice(latents, outputType, height, width));

    /// <summary>
    /// Decodes intermediate packed latents (e.g. <see cref="StepEndContext.Latents"/> in a step callback) of an image
    /// <paramref name="height"/> × <paramref name="width"/> to images, as a preview of the generation so far. Under model
    /// offload the VAE comes to the device for it and the transformer goes back after.
    /// </summary>
    public IReadOnlyList<ImageBuffer> PreviewImages(Tensor latents, int height, int width) =>
        DecodePreview(latents, () => DecodeOnDevice(latents, OutputType.Image, height, width).Images!);

    private ChromaOutput DecodeOnDevice(Tensor latents, OutputType outputType, int height, int width)
    {
        if (outputType == OutputType.Latent) return new ChromaOutput(null, latents.alias().DetachFromDisposeScope());
        Components.Activate("vae");
        var (images, tensor) = FluxPipelineBase.DecodePackedLatents(Components.Vae, latents, outputType, height, width, VaeScaleFactor, ImageProcessor);
        return new ChromaOutput(images, tensor);
    }

    /// <summary>diffusers' <c>check_inputs</c> and more (sizes, counts, shapes, dtypes), before any compute.</summary>
    private void CheckInputs(ChromaRequest r, int height, int width)
    {
        static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
        int multiple = VaeScaleFactor * 2;
        if (height <= 0 || width <= 0 || height % multiple != 0 || width % multiple != 0)
            throw new ArgumentException($"height and width must be positive multiples of {multiple}, got {height}x{width} (try {Math.Max(multiple, height - height % multiple)}x{Math.Max(multiple, width - width % multiple)}).");
        if (r.NumInferenceSteps is < 1)
            throw new ArgumentException($"num_inference_steps must be at least 1, got {r.NumInferenceSteps}.");
        if (r.Sigmas is { Length: 0 })
            throw new ArgumentException("sigmas must not be empty.");
        if (r.Sigmas is not null && r.NumInferenceSteps is int n && n != r.Sigmas.Length)
            throw new ArgumentException($"{r.Sigmas.Length} sigmas were given for {n} inference steps.");
        if (r.Sigmas is not null && r.Sigmas.Any(s => !float.IsFinite(s)))
            throw new ArgumentException("sigmas must be finite numbers.");
        if (!double.IsFinite(r.GuidanceScale))
            throw new ArgumentException($"guidance_scale must be a finite number, got {r.GuidanceScale}.");
        if (r.Mu is { } mu && !double.IsFinite(mu))
            throw new ArgumentException($"mu must be a finite number, got {mu}.");
        if (r.NumImagesPerPrompt < 1)
            throw new ArgumentException($"num_images_per_prompt must be at least 1, got {r.NumImagesPerPrompt}.");
        if (r.MaxSequenceLength is < 1 or > 512)
            throw new ArgumentException($"max_sequence_length must be in [1, 512], got {r.MaxSequenceLength}.");
        if (r.OutputType is not (OutputType.Image or OutputType.Numpy or OutputType.Tensor or OutputType.Latent))
            throw new ArgumentException($"Unknown output type {r.OutputType}.");
        if (r.PromptEmbeds is not null && r.Prompt is not null)
            throw new ArgumentException("Give either a prompt or prompt_embeds, not both.");
        if (r.PromptEmbeds is null && (r.Prompt is null || r.Prompt.Value.Count == 0))
            throw new ArgumentException("Give a prompt or prompt_embeds.");
        if (r.NegativePromptEmbeds is not null && r.NegativePrompt is not null)
            throw new ArgumentException("Give either a negative prompt or negative_prompt_embeds, not both.");
        if (r.PromptEmbeds is not null && r.PromptAttentionMask is null)
            throw new ArgumentException("prompt_embeds needs prompt_attention_mask too (Chroma masks the text tokens in the transformer).");
        if (r.NegativePromptEmbeds is not null && r.NegativePromptAttentionMask is null)
            throw new ArgumentException("negative_prompt_embeds needs negative_prompt_attention_mask too.");
        if (r.PromptAttentionMask is not null && r.PromptEmbeds is null)
            throw new ArgumentException("prompt_attention_mask goes with prompt_embeds (the pipeline builds the mask of a prompt itself).");
        if (r.NegativePromptAttentionMask is not null && r.NegativePromptEmbeds is null)
            throw new ArgumentException("negative_prompt_attention_mask goes with negative_prompt_embeds.");
        long textWidth = Components.Transformer.Config.JointAttentionDim;
        int prompts = r.PromptEmbeds is { } pe ? (int)pe.shape[0] : r.Prompt!.Value.Count;
        void CheckEmbeds(Tensor e, Tensor mask, string name, string maskName)
        {
            if (e.dim() != 3 || e.shape[2] != textWidth || e.shape[1] < 1 || e.shape[0] < 1 || !e.is_floating_point())
                throw new ArgumentException($"{name} must be floating [B, S, {textWidth}] (the transformer's joint_attention_dim), got {e.dtype} {Shape(e)}.");
            if (e.shape[0] != prompts)
                throw new ArgumentException($"{name} has {e.shape[0]} rows for {prompts} prompts.");
            if (!mask.shape.SequenceEqual(e.shape[..2]))
                throw new ArgumentException($"{maskName} must be [{e.shape[0]}, {e.shape[1]}] like {name}'s first two dimensions, got {Shape(mask)}.");
            if (mask.dtype is ScalarType.ComplexFloat32 or ScalarType.ComplexFloat64)
                throw new ArgumentException($"{maskName} must be bool, integer or floating, got {mask.dtype}.");
        }
        if (r.PromptEmbeds is { } embeds) CheckEmbeds(embeds, r.PromptAttentionMask!, "prompt_embeds", "prompt_attention_mask");
        bool cfg = r.GuidanceScale > 1;
        if (r.NegativePromptEmbeds is { } negative) CheckEmbeds(negative, r.NegativePromptAttentionMask!, "negative_prompt_embeds", "negative_prompt_attention_mask");
        if (r.NegativePrompt is { } np && np.Count != 1 && np.Count != prompts)
            throw new ArgumentException($"{np.Count} negative prompts were given for {prompts} prompts.");
        bool needsEncoder = r.PromptEmbeds is null || (cfg && r.NegativePromptEmbeds is null);
        if (needsEncoder && (Components.TextEncoder is null || Components.Tokenizer is null))
            throw new ArgumentException("These components have no T5 text encoder: pass prompt_embeds with prompt_attention_mask (and, with guidance above 1, negative_prompt_embeds with negative_prompt_attention_mask).");
        if (r.Generator is not null && r.Generators is not null)
            throw new ArgumentException("Give one generator or a list of generators, not both.");
        int batch = prompts * r.NumImagesPerPrompt;
        if (r.Generators is { } generators && generators.Count != batch)
            throw new ArgumentException($"{generators.Count} generators were given for a batch of {batch} (prompts x images per prompt).");
    }

    /// <summary>
    /// What image-to-image adds, before any compute: an image (or latents), strength in [0, 1] and at least one step left
    /// after it (diffusers raises the latter after encoding the prompt; the step count is known before).
    /// </summary>
    private static void CheckImageToImage(ChromaImg2ImgRequest r)
    {
        if (r.Image is null && r.Latents is null)
            throw new ArgumentException("image is required for image-to-image (or packed latents to start from).");
        Strength.Check(r.Strength);
        int total = r.Sigmas?.Length ?? r.NumInferenceSteps ?? ChromaRequest.DefaultSteps;
        Strength.CheckedStartStep(total, r.Strength);
    }

    /// <summary>Checks a preprocessed image (or latent tensor) against the batch and the latent size, before any compute.</summary>
    private void CheckImageTensor(Tensor image, int batch, int latentH, int latentW)
    {
        if (image.shape[1] == Components.Vae.Config.LatentChannels && (image.shape[2] != latentH || image.shape[3] != latentW))
            throw new ArgumentException($"image given as latents must be [N, {image.shape[1]}, {latentH}, {latentW}] for this size, got [{string.Join(", ", image.shape)}].");
        Strength.CheckRepeatsToBatch(image.shape[0], batch);
    }
}
