using DiffusersSharp.Images;
using DiffusersSharp.Models;
using DiffusersSharp.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// What the Flux.1 pipelines (text-to-image, image-to-image, inpainting, each also with ControlNets; Fill, Kontext) share:
/// the components, the latent packing, the input checks, prompt encoding (with true CFG's negative side), the schedule,
/// the denoising loop and the VAE decode; the text-to-image, image-to-image and inpainting runs themselves
/// (FluxPipelineBase.Modes.cs), with or without the ControlNet part (FluxPipelineBase.ControlNet.cs). Each pipeline adds
/// how its latents start and what happens after each step.
/// </summary>
public abstract partial class FluxPipelineBase : DiffusionPipelineBase<FluxComponents>
{
    /// <summary>Takes a reference on <paramref name="components"/>; they are freed when the last pipeline using them is disposed.</summary>
    protected FluxPipelineBase(FluxComponents components) : base(components)
    {
        // diffusers: both processors use vae_scale_factor * 2, since the packing doubles the latent granularity.
        int scale = components.Vae.VaeScaleFactor * 2, channels = components.Vae.Config.LatentChannels;
        ImageProcessor = new VaeImageProcessor(new VaeImageProcessorConfig { VaeScaleFactor = scale, VaeLatentChannels = channels });
        MaskProcessor = VaeImageProcessor.CreateMaskProcessor(scale, channels);
    }

    /// <summary>Image pre/post-processing (diffusers' <c>image_processor</c>).</summary>
    public VaeImageProcessor ImageProcessor { get; }

    /// <summary>The inpainting mask processor (diffusers' <c>mask_processor</c>: grayscale, binarized at 0.5, not normalized).</summary>
    public VaeImageProcessor MaskProcessor { get; }

    /// <summary>Called when a prompt is cut to a tokenizer's limit (tokenizer, untruncated length, limit).</summary>
    public Action<string, int, int>? OnPromptTruncated { get; set; }

    /// <summary>The VAE's spatial scale factor (8).</summary>
    public int VaeScaleFactor => Components.Vae.VaeScaleFactor;

    /// <summary>Default height and width: diffusers' default_sample_size 128 × the VAE scale factor (1024).</summary>
    public int DefaultSize => 128 * VaeScaleFactor;

    /// <summary>Default number of steps (28: FluxPipeline, Img2Img, Inpaint and Kontext; Fill has 50).</summary>
    public const int DefaultSteps = 28;

    /// <summary>This pipeline's number of steps when the request leaves it null (diffusers' <c>__call__</c> default).</summary>
    public virtual int DefaultStepCount => DefaultSteps;

    /// <summary>The output height and width of <paramref name="request"/> (its own, or the default 1024; Kontext derives it).</summary>
    public virtual (int Height, int Width) OutputSizeOf(FluxRequest request) => (request.Height ?? DefaultSize, request.Width ?? DefaultSize);

    /// <summary>
    /// diffusers' <c>_pack_latents</c>: [B, C, h, w] (h, w even) -> [B, (h/2)·(w/2), 4C], each token a 2×2 patch with
    /// the channels outermost (c, dy, dx).
    /// </summary>
    public static Tensor PackLatents(Tensor latents)
    {
        if (latents.dim() != 4 || latents.shape[2] % 2 != 0 || latents.shape[3] % 2 != 0)
            throw new ArgumentException($"latents to pack must be [B, C, h, w] with even h and w, got [{string.Join(", ", latents.shape)}].", nameof(latents));
        long b = latents.shape[0], c = latents.shape[1], h = latents.shape[2], w = latents.shape[3];
        using var scope = NewDisposeScope();
        var packed = latents.view(b, c, h / 2, 2, w / 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h / 2) * (w / 2), c * 4);
        return packed.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// diffusers' <c>_unpack_latents</c>: packed [B, S, 4C] of an image <paramref name="height"/> × <paramref name="width"/>
    /// pixels -> [B, C, 2·(height / (2·vaeScaleFactor)), 2·(width / (2·vaeScaleFactor))].
    /// </summary>
    public static Tensor UnpackLatents(Tensor latents, int height, int width, int vaeScaleFactor)
    {
        long h = 2 * (height / (vaeScaleFactor * 2)), w = 2 * (width / (vaeScaleFactor * 2));
        if (latents.dim() != 3 || latents.shape[1] != (h / 2) * (w / 2) || latents.shape[2] % 4 != 0)
            throw new ArgumentException($"packed latents for {height}x{width} must be [B, {(h / 2) * (w / 2)}, 4C], got [{string.Join(", ", latents.shape)}].", nameof(latents));
        long b = latents.shape[0], channels = latents.shape[2];
        using var scope = NewDisposeScope();
        var unpacked = latents.view(b, h / 2, w / 2, channels / 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, channels / 4, h, w);
        return unpacked.MoveToOuterDisposeScope();
    }

    /// <summary>diffusers' <c>_prepare_latent_image_ids</c>: [h·w, 3] with (0, row, column) per packed token, row-major.</summary>
    public static Tensor LatentImageIds(int height, int width, Device device, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var rows = arange(height, dtype: ScalarType.Float32).unsqueeze(1).expand(height, width);
        var cols = arange(width, dtype: ScalarType.Float32).unsqueeze(0).expand(height, width);
        var ids = stack([zeros(height, width), rows, cols], -1).reshape(height * width, 3);
        return ids.to(dtype, device).MoveToOuterDisposeScope();
    }

    /// <summary>The default sigmas: numpy's <c>linspace(1.0, 1/N, N)</c> in float64, as float32 (what the scheduler takes).</summary>
    public static float[] DefaultSigmas(int numInferenceSteps) =>
        Array.ConvertAll(NumpyMath.Linspace(1.0, 1.0 / numInferenceSteps, numInferenceSteps), v => (float)v);

    /// <summary>diffusers' <c>calculate_shift</c> for <paramref name="imageSeqLen"/> packed tokens with the scheduler config's values.</summary>
    public static double Mu(int imageSeqLen, FlowMatchEulerDiscreteSchedulerConfig config) =>
        FlowMatchEulerDiscreteScheduler.CalculateShift(imageSeqLen, config.BaseImageSeqLen, config.MaxImageSeqLen, config.BaseShift, config.MaxShift);

    /// <summary>Whether the request runs diffusers' true CFG: a scale above 1 and a negative prompt or negative embeddings.</summary>
    public static bool DoesTrueCfg(FluxRequest r) =>
        r.TrueCfgScale > 1 && (r.NegativePrompt is not null || (r.NegativePromptEmbeds is not null && r.NegativePooledPromptEmbeds is not null));

    /// <summary>The batch size: prompts (or embedding rows) × images per prompt.</summary>
    protected static int BatchSize(FluxRequest r) => (r.PromptEmbeds is { } e ? (int)e.shape[0] : r.Prompt!.Value.Count) * r.NumImagesPerPrompt;

    /// <summary>The latent height and width (unpacked): <c>2 · (size / (2 · vae_scale_factor))</c>.</summary>
    protected (int Height, int Width) LatentSize(int height, int width) =>
        (2 * (height / (VaeScaleFactor * 2)), 2 * (width / (VaeScaleFactor * 2)));

    /// <summary>The latent channels before packing (in_channels / 4: 16; Fill's transformer takes more, see its override).</summary>
    protected virtual int LatentChannels => Components.Transformer.Config.InChannels / 4;

    /// <summary>Validates what every Flux pipeline validates (diffusers' check_inputs, stricter on sizes), before any compute.</summary>
    protected void CheckInputs(FluxRequest r, int height, int width)
    {
        int multiple = VaeScaleFactor * 2;
        if (height <= 0 || width <= 0 || height % multiple != 0 || width % multiple != 0)
            throw new ArgumentException($"height and width must be positive multiples of {multiple}, got {height}x{width} (try {Math.Max(multiple, height - height % multiple)}x{Math.Max(multiple, width - width % multiple)}).");
        if (r.NumInferenceSteps is < 1)
            throw new ArgumentException($"num_inference_steps must be at least 1, got {r.NumInferenceSteps}.");
        if (r.Sigmas is { Length: 0 })
            throw new ArgumentException("sigmas must not be empty.");
        if (r.Sigmas is not null && r.NumInferenceSteps is int n && n != r.Sigmas.Length)
            throw new ArgumentException($"{r.Sigmas.Length} sigmas were given for {n} inference steps.");
        if (!double.IsFinite(r.GuidanceScale))
            throw new ArgumentException($"guidance_scale must be a finite number, got {r.GuidanceScale}.");
        if (!double.IsFinite(r.TrueCfgScale))
            throw new ArgumentException($"true_cfg_scale must be a finite number, got {r.TrueCfgScale}.");
        if (r.NumImagesPerPrompt < 1)
            throw new ArgumentException($"num_images_per_prompt must be at least 1, got {r.NumImagesPerPrompt}.");
        if (r.MaxSequenceLength is < 1 or > 512)
            throw new ArgumentException($"max_sequence_length must be in [1, 512], got {r.MaxSequenceLength}.");
        if (r.PromptEmbeds is not null && (r.Prompt is not null || r.Prompt2 is not null))
            throw new ArgumentException("Give either a prompt or prompt_embeds, not both.");
        if (r.PromptEmbeds is null && (r.Prompt is null || r.Prompt.Value.Count == 0))
            throw new ArgumentException("Give a prompt or prompt_embeds.");
        if (r.NegativePromptEmbeds is not null && (r.NegativePrompt is not null || r.NegativePrompt2 is not null))
            throw new ArgumentException("Give either a negative prompt or negative_prompt_embeds, not both.");
        if (r.PromptEmbeds is not null && r.PooledPromptEmbeds is null)
            throw new ArgumentException("prompt_embeds needs pooled_prompt_embeds too (they come from the same encode_prompt call).");
        if (r.NegativePromptEmbeds is not null && r.NegativePooledPromptEmbeds is null)
            throw new ArgumentException("negative_prompt_embeds needs negative_pooled_prompt_embeds too.");
        // The two sides run as separate transformer passes with their own text ids, so their token counts may differ (a
        // FLUX.1-Redux prior's embeddings against a 512-token negative prompt), as in diffusers; batch and width may not.
        if (r.PromptEmbeds is not null && r.NegativePromptEmbeds is not null && !SameBatchAndWidth(r.PromptEmbeds, r.NegativePromptEmbeds))
            throw new ArgumentException($"prompt_embeds [{string.Join(", ", r.PromptEmbeds.shape)}] and negative_prompt_embeds [{string.Join(", ", r.NegativePromptEmbeds.shape)}] must have the same batch and width (their token counts may differ).");
        if (r.Generator is not null && r.Generators is not null)
            throw new ArgumentException("Give one generator or a list of generators, not both.");
        int batch = BatchSize(r);
        if (r.Generators is { } generators && generators.Count != batch)
            throw new ArgumentException($"{generators.Count} generators were given for a batch of {batch} (prompts x images per prompt).");
        // diffusers' Flux pipelines with IP-Adapter inputs (FluxIPAdapterMixin); Fill and ControlNet image-to-image /
        // inpainting have none.
        CheckIpAdapterInputs(r, supported: this is FluxPipeline or FluxImg2ImgPipeline or FluxInpaintPipeline or FluxControlNetPipeline
            or FluxKontextPipeline or FluxKontextInpaintPipeline);
    }

    /// <summary>
    /// Checks what image-to-image and inpainting add, before any compute: strength in [0, 1] and at least one step left
    /// after it (diffusers raises the latter after encoding the prompt; the step count is known before).
    /// </summary>
    protected void CheckStrength(FluxImg2ImgRequest r)
    {
        Strength.Check(r.Strength);
        int total = r.Sigmas?.Length ?? r.NumInferenceSteps ?? DefaultStepCount;
        Strength.CheckedStartStep(total, r.Strength);
    }

    /// <summary>
    /// The strength tail of the scheduler's timesteps (diffusers' <c>get_timesteps</c>): sets the scheduler's begin index
    /// to its first step and returns the timesteps from there.
    /// </summary>
    protected internal static Tensor StrengthTimesteps(FlowMatchEulerDiscreteScheduler scheduler, double strength)
    {
        int start = Strength.StartStep((int)scheduler.Timesteps.shape[0], strength);
        scheduler.SetBeginIndex(start);
        return scheduler.Timesteps[start..];
    }

    /// <summary>An image input as a float32 tensor NCHW in [-1, 1] at the requested size (a latent tensor passes through).</summary>
    private protected Tensor PreprocessImage(PipelineImage image, int height, int width, MaskCrop? crop = null) =>
        image.Preprocess(ImageProcessor, height, width, crop).to(ScalarType.Float32);

    /// <summary>A mask input as a binarized tensor N1HW at the requested size.</summary>
    private protected Tensor PreprocessMask(PipelineImage mask, int height, int width, MaskCrop? crop = null) =>
        mask.Preprocess(MaskProcessor, height, width, crop);

    /// <summary>
    /// Checks a preprocessed image (or latent tensor) against the batch and size before any compute: latents must have
    /// the latent size, and the batch must be a multiple of the images (they are repeated, as diffusers does).
    /// </summary>
    protected void CheckImageTensor(Tensor image, int batch, int height, int width, string name)
    {
        var (latentH, latentW) = LatentSize(height, width);
        if (image.shape[1] == Components.Vae.Config.LatentChannels && (image.shape[2] != latentH || image.shape[3] != latentW))
            throw new ArgumentException($"{name} given as latents must be [N, {image.shape[1]}, {latentH}, {latentW}] for {height}x{width}, got [{string.Join(", ", image.shape)}].");
        Strength.CheckRepeatsToBatch(image.shape[0], batch, name);
    }

    /// <summary>
    /// diffusers' Flux <c>_encode_vae_image</c> and the batch repeat of <c>prepare_latents</c>: the VAE posterior sample
    /// drawn with the request's generator(s), <c>(latents − shift_factor) · scaling_factor</c>, repeated to the batch. A
    /// tensor with the latent channel count is taken as latents as is. <paramref name="mode"/> takes the posterior mode
    /// instead (diffusers' <c>sample_mode="argmax"</c>, Kontext): no draw.
    /// </summary>
    protected Tensor EncodeImage(Tensor image, FluxRequest r, ScalarType dtype, int batch, bool mode = false)
    {
        var device = Components.Device;
        image = image.to(dtype, device);
        var vae = Components.Vae;
        Tensor latents = image;
        if (image.shape[1] != vae.Config.LatentChannels)
        {
            Components.Activate("vae");
            Tensor sample;
            if (mode)
            {
                using var posterior = vae.Encode(image.to(vae.WeightDtype()));
                sample = posterior.Mode();
            }
            else sample = RandomDraws.SampleVae(vae, image, r.Generator, r.Generators, device);
            latents = (sample - (vae.Config.ShiftFactor ?? 0.0)) * vae.Config.ScalingFactor;
        }
        latents = latents.to(dtype);
        return batch > latents.shape[0] ? cat(Enumerable.Repeat(latents, (int)(batch / latents.shape[0])).ToArray(), 0) : latents;
    }

    /// <summary>Whether the T5 prompts go through the CLIP tokenizer's textual inversion conversion (diffusers'
    /// FluxControlNetPipeline does that; see <see cref="FluxPromptEncoder.ConvertT5PromptWithClipTokenizer"/>).</summary>
    private protected virtual bool ConvertsT5PromptWithClipTokenizer => false;

    /// <summary>
    /// Encodes the prompt and, under true CFG, the negative prompt (diffusers' two <c>encode_prompt</c> calls), each
    /// repeated for the images per prompt.
    /// </summary>
    protected (FluxEncodedPrompt Positive, FluxEncodedPrompt? Negative) EncodePrompts(FluxRequest request, int batch)
    {
        var device = Components.Device;
        var encoder = Components.CreatePromptEncoder(OnPromptTruncated);
        encoder.ConvertT5PromptWithClipTokenizer = ConvertsT5PromptWithClipTokenizer;
        var idsDtype = Components.TextEncoder?.WeightDtype() ?? Components.Transformer.Dtype;
        var positive = encoder.Encode(request.Prompt, request.Prompt2, request.PromptEmbeds, request.PooledPromptEmbeds,
            request.NumImagesPerPrompt, request.MaxSequenceLength, device, idsDtype);
        if (!DoesTrueCfg(request)) return (positive, null);
        int prompts = batch / request.NumImagesPerPrompt;
        PromptList? neg = request.NegativePrompt is { } np ? new PromptList(np.Broadcast(prompts, "negative_prompt")) : (PromptList?)null;
        PromptList? neg2 = request.NegativePrompt2 is { } np2 ? new PromptList(np2.Broadcast(prompts, "negative_prompt_2")) : (PromptList?)null;
        var negative = encoder.Encode(neg, neg2, request.NegativePromptEmbeds, request.NegativePooledPromptEmbeds,
            request.NumImagesPerPrompt, request.MaxSequenceLength, device, idsDtype);
        if (!SameBatchAndWidth(negative.PromptEmbeds, positive.PromptEmbeds))
        {
            string message = $"negative prompt embeddings [{string.Join(", ", negative.PromptEmbeds.shape)}] must have the batch and width of the prompt's [{string.Join(", ", positive.PromptEmbeds.shape)}].";
            positive.Dispose();
            negative.Dispose();
            throw new ArgumentException(message);
        }
        return (positive, negative);
    }

    /// <summary>Whether two [B, S, D] prompt embeddings agree on B and D (true CFG's two passes may differ in S).</summary>
    private static bool SameBatchAndWidth(Tensor a, Tensor b) =>
        a.dim() == 3 && b.dim() == 3 && a.shape[0] == b.shape[0] && a.shape[2] == b.shape[2];

    /// <summary>
    /// A scheduler for one call with its timesteps set as diffusers' <c>retrieve_timesteps</c>: the request's sigmas or
    /// <c>linspace(1, 1/N, N)</c>, and mu from the packed image token count (or the request's).
    /// </summary>
    protected FlowMatchEulerDiscreteScheduler CreateScheduler(FluxRequest request, int imageSeqLen)
    {
        var config = Components.SchedulerConfig;
        var scheduler = new FlowMatchEulerDiscreteScheduler(config);
        var sigmas = request.Sigmas ?? DefaultSigmas(request.NumInferenceSteps ?? DefaultStepCount);
        scheduler.SetTimesteps(sigmas.Length, Components.Device, sigmas, request.Mu ?? Mu(imageSeqLen, config));
        return scheduler;
    }

    /// <summary>The guidance embedding's input (the guidance scale per sample, float32), or null for models without it.</summary>
    protected Tensor? GuidanceTensor(FluxRequest request, int batch) => Components.Transformer.Config.GuidanceEmbeds
        ? full([1], request.GuidanceScale, dtype: ScalarType.Float32, device: Components.Device).expand(batch)
        : null;

    /// <summary>Per-call hooks into the denoising loop (inpainting blends the known region; the defaults do nothing).</summary>
    protected class DenoiseHooks
    {
        /// <summary>Runs after each scheduler step (<paramref name="step"/> indexes <paramref name="timesteps"/>); returns the latents to continue with.</summary>
        public virtual Tensor AfterStep(Tensor latents, int step, FlowMatchEulerDiscreteScheduler scheduler, Tensor timesteps) => latents;

        /// <summary>
        /// The transformer's hidden states for the packed <paramref name="latents"/> (Fill appends its condition channels,
        /// Kontext the input image's tokens; the prediction is cut back to the latents' tokens).
        /// </summary>
        public virtual Tensor TransformerInput(Tensor latents)
        {
            var input = ChannelCondition is null ? latents : cat([latents, ChannelCondition.to(latents.dtype)], 2);
            return Context is null ? input : cat([input, Context], 1);
        }

        /// <summary>Packed context tokens appended to the latents' (Kontext's input or reference image), or null.</summary>
        internal Tensor? Context { get; init; }

        /// <summary>Packed condition channels appended to every latent token's (Fill's masked image and mask, the control
        /// pipelines' control image), or null.</summary>
        internal Tensor? ChannelCondition { get; init; }

        /// <summary>
        /// The ControlNets' residuals for each step (null for none); both transformer passes of true CFG take them, as in
        /// diffusers.
        /// </summary>
        internal FluxControlNetResiduals? Control { get; init; }

        /// <summary>The packed mask shown to callbacks (inpainting only); a callback may replace it.</summary>
        public virtual Tensor? Mask { get => null; set { } }
    }

    /// <summary>
    /// The denoising loop of the Flux pipelines over <paramref name="timesteps"/> (the scheduler's, or their strength
    /// tail): transformer, optional true CFG (<c>neg + s · (pos − neg)</c>), scheduler step, pipeline hook, callback. Each
    /// step runs in its own dispose scope; cancellation is checked between steps. IP-Adapter image embeddings (and the
    /// request's IP-Adapter scale) are prepared first, as diffusers does just before its loop.
    /// </summary>
    protected Tensor Denoise(Tensor latents, FluxEncodedPrompt positive, FluxEncodedPrompt? negative, Tensor imageIds, Tensor? guidance,
        FlowMatchEulerDiscreteScheduler scheduler, Tensor timesteps, FluxRequest r, IProgress<PipelineProgress>? progress, CancellationToken ct,
        DenoiseHooks? hooks = null)
    {
        hooks ??= new DenoiseHooks();
        var transformer = Components.Transformer;
        int total = (int)timesteps.shape[0];
        double trueCfgScale = r.TrueCfgScale;
        Tensor embeds = positive.PromptEmbeds, pooled = positive.PooledPromptEmbeds;
        var ip = PrepareIpAdapterEmbeds(r, (int)latents.shape[0]);
        using var ipScale = IpAdapterScaleFor(r);
        Components.Activate("transformer");
        progress?.Report(new PipelineProgress("denoise", 0, total));
        for (int i = 0; i < total; i++)
        {
            ct.ThrowIfCancellationRequested();
            using (var stepScope = NewDisposeScope())
            {
                var t = timesteps[i];
                // diffusers: t.expand(B).to(latents.dtype), then / 1000 (in that dtype) into the transformer.
                var timestep = t.expand(latents.shape[0]).to(latents.dtype) / 1000;
                var input = hooks.TransformerInput(latents);
                var (blocks, singles) = hooks.Control?.ForStep(latents, timestep, i, embeds, pooled, positive.TextIds) ?? (null, null);
                var noisePred = OwnTokens(transformer.forward(input, embeds, pooled, timestep, imageIds, positive.TextIds, guidance, blocks, singles,
                    ip?.Positive), latents);
                if (negative is not null && trueCfgScale > 1)
                {
                    // diffusers swaps in the negative image embeddings for this pass (the positive ones stay otherwise).
                    var negPred = OwnTokens(transformer.forward(input, negative.PromptEmbeds, negative.PooledPromptEmbeds, timestep, imageIds, negative.TextIds,
                        guidance, blocks, singles, ip?.Negative ?? ip?.Positive), latents);
                    noisePred = negPred + trueCfgScale * (noisePred - negPred);
                }
                var next = scheduler.Step(noisePred, t, latents);
                next = hooks.AfterStep(next, i, scheduler, timesteps);
                next.MoveToOuterDisposeScope();
                latents.Dispose();
                latents = next;
            }
            progress?.Report(new PipelineProgress("denoise", i + 1, total));
            if (r.CallbackOnStepEnd is { } callback)
            {
                var context = new StepEndContext
                {
                    Step = i, TotalSteps = total, Timestep = timesteps[i].item<float>(), Latents = latents,
                    PromptEmbeds = embeds, PooledPromptEmbeds = pooled, GuidanceScale = trueCfgScale, Mask = hooks.Mask,
                };
                callback(context);
                latents = StepEndContext.Adopt(latents, context.Latents);
                embeds = StepEndContext.Adopt(embeds, context.PromptEmbeds);
                pooled = StepEndContext.Adopt(pooled, context.PooledPromptEmbeds ?? pooled);
                if (context.Mask is not null && !ReferenceEquals(context.Mask, hooks.Mask)) hooks.Mask = context.Mask.alias();
                trueCfgScale = context.GuidanceScale;
                if (context.Interrupt) break;
            }
        }
        return latents;
    }

    /// <summary>The prediction for the latents' own tokens (Kontext's model also predicts for the input image's).</summary>
    private static Tensor OwnTokens(Tensor prediction, Tensor latents) =>
        prediction.shape[1] == latents.shape[1] ? prediction : prediction[.., ..(int)latents.shape[1]];

    /// <summary>
    /// Decodes the final packed latents to the requested output; the end of every call: under model offload the last
    /// model goes back to the CPU afterwards (diffusers' <c>maybe_free_model_hooks</c>).
    /// </summary>
    protected FluxOutput Decode(Tensor latents, OutputType outputType, int height, int width, IProgress<PipelineProgress>? progress) =>
        DecodeAndFinish(progress, () => DecodeOnDevice(latents, outputType, height, width));

    /// <summary>
    /// Decodes intermediate packed latents (e.g. <see cref="StepEndContext.Latents"/> in a step callback) of an image
    /// <paramref name="height"/> × <paramref name="width"/> to images, as a preview of the generation so far. Under model
    /// offload the VAE comes to the device for it and the transformer goes back after.
    /// </summary>
    public IReadOnlyList<ImageBuffer> PreviewImages(Tensor latents, int height, int width) =>
        DecodePreview(latents, () => DecodeOnDevice(latents, OutputType.Image, height, width).Images!);

    private FluxOutput DecodeOnDevice(Tensor latents, OutputType outputType, int height, int width)
    {
        if (outputType == OutputType.Latent) return new FluxOutput(null, latents.alias().DetachFromDisposeScope());
        Components.Activate("vae");
        var (images, tensor) = DecodePackedLatents(Components.Vae, latents, outputType, height, width, VaeScaleFactor, ImageProcessor);
        return new FluxOutput(images, tensor);
    }

    /// <summary>
    /// Unpacks Flux-style packed latents of an image <paramref name="height"/> × <paramref name="width"/>, undoes the VAE's
    /// scaling and shift, decodes them and converts the result to <paramref name="outputType"/> (not latent): the decode of
    /// every pipeline with FLUX's packing (Flux, Chroma). The VAE must already be on its device.
    /// </summary>
    internal static (IReadOnlyList<ImageBuffer>? Images, Tensor? Tensor) DecodePackedLatents(Models.Autoencoders.AutoencoderKL vae, Tensor latents, OutputType outputType,
        int height, int width, int vaeScaleFactor, VaeImageProcessor processor)
    {
        using var scope = NewDisposeScope();
        var unpacked = UnpackLatents(latents, height, width, vaeScaleFactor);
        var scaled = unpacked / vae.Config.ScalingFactor + (vae.Config.ShiftFactor ?? 0.0);
        var decoded = vae.Decode(scaled.to(vae.WeightDtype()));
        return DecodedOutput.From(decoded, outputType, processor); // a tensor result is detached from the scope
    }
}
