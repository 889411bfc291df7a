using DiffusersSharp.Images;
using DiffusersSharp.Models;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.QwenImage;

/// <summary>
/// What diffusers' <c>QwenImagePipeline</c> and <c>QwenImageImg2ImgPipeline</c> share (v0.39): prompts in Qwen-Image's
/// template -> the Qwen2.5-VL text model's last hidden states after the template's system turn, zero-padded with a mask
/// (<see cref="QwenImagePromptEncoder"/>), or given embeddings and masks, repeated per image -> packed latents
/// [B, (H/16)·(W/16), 4·z_dim] (noise, or the noised image) -> FlowMatchEuler steps (sigmas <c>linspace(1, 1/N, N)</c>,
/// mu from the packed token count) over the transformer, fed σ = t / 1000; true CFG runs the negative text in a second
/// forward and rescales <c>neg + s · (pos − neg)</c> per token to the positive prediction's norm -> unpack,
/// <c>latents · std + mean</c> (as diffusers computes it: divided by 1 / std), VAE decode of the single frame.
/// </summary>
public abstract class QwenImagePipelineBase : DiffusionPipelineBase<QwenImageComponents>
{
    /// <summary>Takes a reference on <paramref name="components"/>; they are freed when the last pipeline using them is disposed.</summary>
    protected QwenImagePipelineBase(QwenImageComponents components) : base(components)
    {
        // diffusers: VaeImageProcessor(vae_scale_factor=vae_scale_factor * 2), its other settings the defaults.
        ImageProcessor = new VaeImageProcessor(new VaeImageProcessorConfig { VaeScaleFactor = components.Vae.VaeScaleFactor * 2 });
    }

    /// <summary>Image pre/post-processing (diffusers' <c>image_processor</c>, at twice the VAE scale factor).</summary>
    public VaeImageProcessor ImageProcessor { get; }

    /// <summary>The VAE's spatial scale factor (8; diffusers takes 2^len(temperal_downsample)).</summary>
    public int VaeScaleFactor => Components.Vae.VaeScaleFactor;

    /// <summary>Height and width must be multiples of this (twice the VAE scale factor: 16).</summary>
    public int SizeMultiple => VaeScaleFactor * 2;

    /// <summary>diffusers' default height and width (default_sample_size 128 × 8 = 1024).</summary>
    public const int DefaultSize = 1024;

    /// <summary>diffusers' default number of steps (50).</summary>
    public const int DefaultSteps = 50;

    /// <summary>diffusers' limit of <see cref="QwenImageRequest.MaxSequenceLength"/>.</summary>
    public const int MaxSequenceLengthLimit = 1024;

    /// <summary>Whether these components can encode prompt strings (the text encoder and its tokenizer are loaded).</summary>
    protected bool CanEncodePrompts => Components.TextEncoder is not null && Components.Tokenizer is not null;

    /// <summary>
    /// diffusers' <c>_get_qwen_prompt_embeds</c> (<see cref="QwenImagePromptEncoder"/>): [B, L, D] embeddings in the text
    /// encoder's dtype and their [B, L] mask. Under model offload the text encoder comes to the device for it.
    /// </summary>
    /// <exception cref="InvalidOperationException">These components have no text encoder.</exception>
    public (Tensor PromptEmbeds, Tensor Mask) EncodePrompt(IReadOnlyList<string> prompts, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        ThrowIfDisposed();
        if (!CanEncodePrompts)
            throw new InvalidOperationException("These Qwen-Image components have no text encoder (LoadTextEncoders = false): pass prompt embeddings.");
        Components.Activate("text_encoder");
        using var inference = inference_mode();
        var encoder = new QwenImagePromptEncoder(Components.Tokenizer!, Components.TextEncoder!);
        return encoder.Encode(prompts, Components.Device, Components.TextEncoder!.WeightDtype(), cancellationToken);
    }

    /// <summary>Prompt embeddings of one side of the call, as the loop takes them.</summary>
    /// <param name="Embeds">[B·n, L, D] on the device.</param>
    /// <param name="Mask">[B·n, L] (bool on the device), or null when every token is real.</param>
    private protected readonly record struct TextInput(Tensor Embeds, Tensor? Mask);

    /// <summary>Whether the request runs diffusers' true CFG: a scale above 1 and a negative prompt or negative embeddings.</summary>
    public static bool DoesTrueCfg(QwenImageRequest r)
    {
        ArgumentNullException.ThrowIfNull(r);
        return r.TrueCfgScale > 1 && (r.NegativePrompt is not null || r.NegativePromptEmbeds is not null);
    }

    /// <summary>
    /// diffusers' <c>encode_prompt</c> for both sides: the given embeddings or the encoded prompts, cut to
    /// max_sequence_length, each prompt repeated per image, the mask dropped when all ones; the negative side only under
    /// true CFG.
    /// </summary>
    private protected (TextInput Positive, TextInput? Negative) EncodePrompts(QwenImageRequest r, CancellationToken cancellationToken)
    {
        TextInput Side(PromptList? prompt, Tensor? embeds, Tensor? mask)
        {
            // One negative prompt serves every prompt (diffusers would fail on the batch mismatch).
            if (embeds is null) (embeds, mask) = EncodePrompt(prompt!.Value.Broadcast(PromptCount(r), "negative prompt"), cancellationToken);
            var device = Components.Device;
            long length = Math.Min(embeds.shape[1], r.MaxSequenceLength);
            var cut = embeds.narrow(1, 0, length).to(device);
            var repeated = cut.repeat_interleave(r.NumImagesPerPrompt, dim: 0, output_size: cut.shape[0] * r.NumImagesPerPrompt);
            Tensor? keep = null;
            if (mask is not null)
            {
                var m = mask.narrow(1, 0, length).to(device).ne(0);
                // diffusers drops a mask of all ones: then no attention mask at all (and no masked kernels).
                if (!m.all().item<bool>()) keep = m.repeat_interleave(r.NumImagesPerPrompt, dim: 0, output_size: m.shape[0] * r.NumImagesPerPrompt);
            }
            return new TextInput(repeated, keep);
        }
        var positive = Side(r.Prompt, r.PromptEmbeds, r.PromptEmbedsMask);
        TextInput? negative = DoesTrueCfg(r) ? Side(r.NegativePrompt, r.NegativePromptEmbeds, r.NegativePromptEmbedsMask) : null;
        return (positive, negative);
    }

    /// <summary>The prompt count of a request (embedding batch or prompt strings).</summary>
    private protected static int PromptCount(QwenImageRequest r) => r.PromptEmbeds is { } e ? (int)e.shape[0] : r.Prompt!.Value.Count;

    /// <summary>The latent height and width: <c>2 · (size / 16)</c>.</summary>
    private protected (int Height, int Width) LatentSize(int height, int width) => (2 * (height / SizeMultiple), 2 * (width / SizeMultiple));

    /// <summary>Validates what both Qwen-Image pipelines take, before any compute (diffusers' checks, and what would fail
    /// later in its call: counts, shapes, the rotary range).</summary>
    private protected void CheckInputs(QwenImageRequest r, int height, int width)
    {
        static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
        var config = Components.Transformer.Config;
        int multiple = SizeMultiple;
        // diffusers only warns and rounds the size down; a size it would change is refused here instead.
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
        if (!double.IsFinite(r.TrueCfgScale))
            throw new ArgumentException($"true_cfg_scale must be a finite number, got {r.TrueCfgScale}.");
        if (r.NumImagesPerPrompt < 1)
            throw new ArgumentException($"num_images_per_prompt must be at least 1, got {r.NumImagesPerPrompt}.");
        if (r.MaxSequenceLength < 1 || r.MaxSequenceLength > MaxSequenceLengthLimit)
            throw new ArgumentException($"max_sequence_length must be between 1 and {MaxSequenceLengthLimit}, got {r.MaxSequenceLength}.");
        if (r.OutputType is not (OutputType.Image or OutputType.Numpy or OutputType.Tensor or OutputType.Latent))
            throw new ArgumentException($"Unknown output type {r.OutputType}.");
        if (r.PromptEmbeds is not null && r.Prompt is not null)
            throw new ArgumentException("Give either a prompt or prompt_embeds, not both.");
        if (r.PromptEmbeds is null && (r.Prompt is null || r.Prompt.Value.Count == 0))
            throw new ArgumentException("Give a prompt or prompt_embeds.");
        if (r.NegativePromptEmbeds is not null && r.NegativePrompt is not null)
            throw new ArgumentException("Give either a negative prompt or negative_prompt_embeds, not both.");
        if (r.PromptEmbedsMask is not null && r.PromptEmbeds is null)
            throw new ArgumentException("prompt_embeds_mask was given without prompt_embeds.");
        if (r.NegativePromptEmbedsMask is not null && r.NegativePromptEmbeds is null)
            throw new ArgumentException("negative_prompt_embeds_mask was given without negative_prompt_embeds.");
        bool cfg = DoesTrueCfg(r);
        bool needsEncoder = r.PromptEmbeds is null || (cfg && r.NegativePromptEmbeds is null);
        if (needsEncoder && !CanEncodePrompts)
            throw new ArgumentException("Qwen-Image prompt strings need the Qwen2.5-VL text encoder, which these components do not have (loaded with " +
                $"LoadTextEncoders = false, or built without one): pass prompt_embeds [B, L, {config.JointAttentionDim}] (and negative_prompt_embeds for CFG).");
        int prompts = PromptCount(r);
        if (r.NegativePrompt is { } np && np.Count != prompts && np.Count != 1)
            throw new ArgumentException($"{np.Count} negative prompts were given for {prompts} prompts; give one, or one per prompt.");
        var (latentH, latentW) = LatentSize(height, width);
        void CheckEmbeds(Tensor e, Tensor? mask, string name)
        {
            if (e.dim() != 3 || e.shape[1] < 1 || e.shape[2] != config.JointAttentionDim || !e.is_floating_point())
                throw new ArgumentException($"{name} must be a floating-point [B, L, {config.JointAttentionDim}] tensor (the transformer's joint_attention_dim) with at least one token, got {Shape(e)} {e.dtype}.");
            if (e.shape[0] != prompts)
                throw new ArgumentException($"{name} holds {e.shape[0]} prompts for {prompts}; give one row per prompt.");
            if (mask is not null && (mask.dim() != 2 || mask.shape[0] != e.shape[0] || mask.shape[1] != e.shape[1]))
                throw new ArgumentException($"{name}_mask must be [{e.shape[0]}, {e.shape[1]}] like {name}, got {Shape(mask)}.");
            long tokens = Math.Min(e.shape[1], r.MaxSequenceLength);
            if (Math.Max(latentH / 4, latentW / 4) + tokens > 4096)
                throw new ArgumentException($"{name}: {tokens} text tokens after a {latentH / 2} x {latentW / 2} grid pass Qwen-Image's 4096 rotary positions.");
        }
        if (r.PromptEmbeds is { } pe) CheckEmbeds(pe, r.PromptEmbedsMask, "prompt_embeds");
        if (r.NegativePromptEmbeds is { } ne) CheckEmbeds(ne, r.NegativePromptEmbedsMask, "negative_prompt_embeds");
        if (r.Generator is not null && r.Generators is not null)
            throw new ArgumentException("Give one generator or a list of generators, not both.");
        int batch = prompts * r.NumImagesPerPrompt;
        if (r.Generators is { } generators && generators.Count != batch)
            throw new ArgumentException($"{generators.Count} generators were given for a batch of {batch} (prompts x images per prompt).");
        long[] latentShape = [batch, (latentH / 2) * (latentW / 2), config.InChannels];
        if (r.Latents is { } l && !l.shape.SequenceEqual(latentShape))
            throw new ArgumentException($"latents must be packed [{string.Join(", ", latentShape)}] for this request, got {Shape(l)}.");
    }

    /// <summary>
    /// A scheduler for one call with its timesteps set as diffusers' <c>retrieve_timesteps</c>: the request's sigmas or
    /// <c>linspace(1, 1/N, N)</c>, and mu from the packed image token count (<c>calculate_shift</c> with the config's values).
    /// </summary>
    private protected FlowMatchEulerDiscreteScheduler CreateScheduler(QwenImageRequest r, int imageSeqLen)
    {
        var config = Components.SchedulerConfig;
        var scheduler = new FlowMatchEulerDiscreteScheduler(config);
        var sigmas = r.Sigmas ?? FluxPipelineBase.DefaultSigmas(r.NumInferenceSteps ?? DefaultSteps);
        scheduler.SetTimesteps(sigmas.Length, Components.Device, sigmas, FluxPipelineBase.Mu(imageSeqLen, config));
        return scheduler;
    }

    /// <summary>
    /// The denoising loop over <paramref name="timesteps"/> (the schedule or its strength tail): per step the transformer
    /// on the positive text (and, under true CFG, on the negative text), the norm-rescaled CFG, the scheduler step, then
    /// the callback. <paramref name="afterStep"/> (inpainting's blend), given the new latents and the step index, returns
    /// the latents to continue with. Each step runs in its own dispose scope; cancellation is checked between steps.
    /// </summary>
    private protected Tensor Denoise(Tensor latents, TextInput positive, TextInput? negative, FlowMatchEulerDiscreteScheduler scheduler,
        Tensor timesteps, (int Frames, int Height, int Width) imageShape, QwenImageRequest r, IProgress<PipelineProgress>? progress, CancellationToken ct,
        Func<Tensor, int, Tensor>? afterStep = null)
    {
        var transformer = Components.Transformer;
        int total = (int)timesteps.shape[0];
        double scale = r.TrueCfgScale;
        Components.Activate("transformer");
        progress?.Report(new PipelineProgress("denoise", 0, total));
        for (int i = 0; i < total; i++)
        {
            ct.ThrowIfCancellationRequested();
            var t = timesteps[i];
            using (var stepScope = NewDisposeScope())
            {
                // diffusers: t.expand(B).to(latents.dtype), then / 1000 in that dtype.
                var sigma = t.expand(latents.shape[0]).to(latents.dtype) / 1000;
                var prediction = transformer.forward(latents, positive.Embeds, positive.Mask, sigma, imageShape);
                if (negative is { } neg)
                {
                    var negPrediction = transformer.forward(latents, neg.Embeds, neg.Mask, sigma, imageShape);
                    var combined = negPrediction + scale * (prediction - negPrediction);
                    // Each token's guided velocity takes the norm of its positive one (norms over the channels).
                    var condNorm = linalg.vector_norm(prediction, dims: [-1L], keepdim: true);
                    var combinedNorm = linalg.vector_norm(combined, dims: [-1L], keepdim: true);
                    prediction = combined * (condNorm / combinedNorm);
                }
                var next = scheduler.Step(prediction, t, latents);
                if (afterStep is not null) next = afterStep(next, i);
                next.MoveToOuterDisposeScope();
                latents.Dispose();
                latents = next;
            }
            progress?.Report(new PipelineProgress("denoise", i + 1, total));
            if (r.CallbackOnStepEnd is { } callback)
            {
                var context = new StepEndContext
                {
                    Step = i, TotalSteps = total, Timestep = t.item<float>(), Latents = latents, PromptEmbeds = positive.Embeds, GuidanceScale = scale,
                };
                callback(context);
                latents = StepEndContext.Adopt(latents, context.Latents);
                if (!ReferenceEquals(context.PromptEmbeds, positive.Embeds))
                {
                    if (!context.PromptEmbeds.shape.SequenceEqual(positive.Embeds.shape))
                        throw new InvalidOperationException($"The step callback replaced prompt_embeds [{string.Join(", ", positive.Embeds.shape)}] with [{string.Join(", ", context.PromptEmbeds.shape)}]; keep the shape (the mask stays).");
                    positive = positive with { Embeds = StepEndContext.Adopt(positive.Embeds, context.PromptEmbeds) };
                }
                scale = context.GuidanceScale;
                if (context.Interrupt) break;
            }
        }
        return latents;
    }

    /// <summary>
    /// The checks of image-to-image and inpainting before any compute (strength in [0, 1], an RGB image tensor, the
    /// request's own), and the first step that <paramref name="r"/>'s strength keeps (diffusers' <c>get_timesteps</c>).
    /// </summary>
    private protected int CheckImageRequest(QwenImageImg2ImgRequest r, int height, int width)
    {
        Strength.Check(r.Strength);
        if (r.Image?.Tensor is { } t && (t.dim() != 4 || t.shape[1] != 3))
            throw new ArgumentException($"image must be RGB: an 8-bit image or a [N, 3, H, W] tensor in [0, 1], got a tensor [{string.Join(", ", t.shape)}].");
        CheckInputs(r, height, width);
        int total = r.Sigmas?.Length ?? r.NumInferenceSteps ?? DefaultSteps;
        return Strength.CheckedStartStep(total, r.Strength);
    }

    /// <summary>
    /// diffusers' <c>_encode_vae_image</c> then the batch repeat of <c>prepare_latents</c>: a VAE posterior sample of the
    /// preprocessed <paramref name="image"/> [N, 3, H, W] (drawn with the request's generator), normalised as
    /// <c>(latents − mean) · (1 / std)</c>, in <paramref name="dtype"/>, repeated to <paramref name="batch"/>: [batch, z, h, w].
    /// </summary>
    private protected Tensor EncodeImageLatents(Tensor image, QwenImageRequest r, ScalarType dtype, int batch)
    {
        var vae = Components.Vae;
        var device = Components.Device;
        Components.Activate("vae");
        var sample = RandomDraws.SampleVae(vae.Encode, vae.WeightDtype(), image.to(dtype, device).unsqueeze(2), r.Generator, r.Generators, device);
        var (mean, inverseStd) = LatentStatistics(sample.dtype, device);
        var latents = ((sample - mean) * inverseStd).to(dtype).squeeze(2);
        return batch > latents.shape[0] ? cat(Enumerable.Repeat(latents, (int)(batch / latents.shape[0])).ToArray(), 0) : latents;
    }

    /// <summary>
    /// diffusers' latent normalisation of the VAE's <c>latents_mean</c> / <c>latents_std</c> as [1, z, 1, 1, 1] tensors in
    /// <paramref name="dtype"/>: the mean and the reciprocal of the std, each computed as diffusers does (float32 values
    /// cast to the dtype, then <c>1.0 / std</c> in it).
    /// </summary>
    private protected (Tensor Mean, Tensor InverseStd) LatentStatistics(ScalarType dtype, Device device)
    {
        var config = Components.Vae.Config;
        var mean = tensor(config.LatentsMean.Select(v => (float)v).ToArray()).view(1, -1, 1, 1, 1).to(dtype, device);
        var inverseStd = 1.0 / tensor(config.LatentsStd.Select(v => (float)v).ToArray()).view(1, -1, 1, 1, 1).to(dtype, device);
        return (mean, inverseStd);
    }

    /// <summary>
    /// Decodes the final packed latents to the requested output (unpack, <c>latents / (1 / std) + mean</c>, VAE decode of
    /// the one frame, postprocess); the end of every call: under model offload the last model goes back to the CPU after.
    /// </summary>
    private protected QwenImageOutput Decode(Tensor latents, OutputType outputType, int height, int width, IProgress<PipelineProgress>? progress) =>
        DecodeAndFinish(progress, () => DecodeOnDevice(latents, outputType, height, width));

    /// <summary>
    /// Decodes intermediate packed latents of a <paramref name="height"/> × <paramref name="width"/> image (e.g.
    /// <see cref="StepEndContext.Latents"/> in a step callback) to images, as a preview of the generation so far. Under
    /// model offload the VAE comes to the device for it and the transformer goes back after.
    /// </summary>
    public IReadOnlyList<ImageBuffer> PreviewImages(Tensor latents, int height, int width) =>
        DecodePreview(latents, () => DecodeOnDevice(latents, OutputType.Image, height, width).Images!);

    private QwenImageOutput DecodeOnDevice(Tensor latents, OutputType outputType, int height, int width)
    {
        if (outputType == OutputType.Latent) return new QwenImageOutput(null, latents.alias().DetachFromDisposeScope());
        Components.Activate("vae");
        using var scope = NewDisposeScope();
        var vae = Components.Vae;
        var dtype = vae.WeightDtype();
        var unpacked = FluxPipelineBase.UnpackLatents(latents, height, width, VaeScaleFactor).unsqueeze(2).to(dtype);
        var (mean, inverseStd) = LatentStatistics(dtype, unpacked.device);
        var decoded = vae.Decode(unpacked / inverseStd + mean).select(2, 0);
        var (images, tensor) = DecodedOutput.From(decoded, outputType, ImageProcessor);
        return new QwenImageOutput(images, tensor);
    }
}
