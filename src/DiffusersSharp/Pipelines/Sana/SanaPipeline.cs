using DiffusersSharp.Images;
using DiffusersSharp.Models;
using DiffusersSharp.Pipelines.PixArt;
using DiffusersSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Sana;

/// <summary>
/// Text-to-image with Sana (diffusers' <c>SanaPipeline</c>; e.g. Efficient-Large-Model/Sana_1600M_1024px_diffusers):
/// prompt -> lower-cased, the complex human instruction in front -> Gemma-2 tokens and mask -> Gemma-2's last hidden
/// state, the first token and the last max_sequence_length - 1 positions kept (the negative prompt without the
/// instruction) -> float32 noise [B, C, H/32, W/32] -> scheduler steps over the transformer (CFG on the batched negative +
/// positive halves, the caption mask applied in cross-attention) -> AutoencoderDC decode (latents / scaling_factor), under
/// resolution binning resized and cropped back to the requested size.
/// </summary>
public sealed class SanaPipeline : DiffusionPipelineBase<SanaComponents>
{
    /// <summary>Wraps loaded components (taking a reference on them; they are freed when the last user is done).</summary>
    public SanaPipeline(SanaComponents components) : base(components)
    {
        ImageProcessor = new VaeImageProcessor(new VaeImageProcessorConfig { VaeScaleFactor = components.VaeScaleFactor });
    }

    /// <summary>Loads a diffusers Sana pipeline folder or hub repo id.</summary>
    public static SanaPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = SanaComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new SanaPipeline(components);
    }

    /// <summary>Image post-processing (diffusers' <c>image_processor</c>).</summary>
    public VaeImageProcessor ImageProcessor { get; }

    /// <summary>Called when a prompt is cut to the token limit (tokenizer, untruncated length, limit).</summary>
    public Action<string, int, int>? OnPromptTruncated { get; set; }

    /// <summary>The VAE's spatial scale factor (32 for Sana's DC-AE).</summary>
    public int VaeScaleFactor => Components.VaeScaleFactor;

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="NotSupportedException">clean_caption was asked for.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public SanaOutput Generate(SanaRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        var r = request;
        var (height, width, requested) = BinnedSize(r);
        using var scheduler = Components.CreateScheduler();
        CheckInputs(r, height, width);
        using var mode = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        var transformer = Components.Transformer;
        bool cfg = r.GuidanceScale > 1.0;

        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (embeds, mask, negEmbeds, negMask) = EncodeCore(r, cfg);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        if (cfg)
        {
            embeds = cat([negEmbeds!, embeds], 0);
            mask = cat([negMask!, mask], 0);
        }

        scheduler.SetTimesteps(r.NumInferenceSteps, device);
        var timesteps = scheduler.TimestepValues.ToArray();
        int channels = transformer.Config.InChannels;
        // diffusers draws (and keeps) the latents in float32 whatever the models' dtype.
        var latents = r.Latents is { } given
            ? given.to(ScalarType.Float32, device)
            : RandomDraws.Randn(LatentShape(r, height, width), r.Generator, r.Generators, ScalarType.Float32, device);

        var generator = r.Generator ?? r.Generators?[0];
        var transformerDtype = transformer.Dtype;
        bool learnedSigma = transformer.Config.OutChannelsOrIn / 2 == channels;
        Components.Activate("transformer");
        progress?.Report(new PipelineProgress("denoise", 0, timesteps.Length));
        for (int i = 0; i < timesteps.Length; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            float t = timesteps[i];
            using (var stepScope = NewDisposeScope())
            {
                var modelInput = cfg ? cat([latents, latents], 0) : latents;
                // t.expand(batch) * timestep_scale: float32, as diffusers' int64 (DPM) or float32 (Euler) t times a float.
                var timestep = full(modelInput.shape[0], t, dtype: ScalarType.Float32, device: device) * transformer.Config.TimestepScale;
                var noisePred = transformer.forward(modelInput.to(transformerDtype), embeds.to(transformerDtype), timestep, mask)
                    .to(ScalarType.Float32);
                if (cfg)
                {
                    var halves = noisePred.chunk(2);
                    noisePred = halves[0] + r.GuidanceScale * (halves[1] - halves[0]);
                }
                if (learnedSigma) noisePred = noisePred.chunk(2, 1)[0];
                var next = scheduler.Step(noisePred, t, latents, generator);
                next.MoveToOuterDisposeScope();
                latents.Dispose();
                latents = next;
            }
            progress?.Report(new PipelineProgress("denoise", i + 1, timesteps.Length));
            if (StepEndContext.Run(r.CallbackOnStepEnd, i, timesteps.Length, t, r.GuidanceScale, ref latents, ref embeds)) break;
        }

        if (r.OutputType == OutputType.Latent)
            return new SanaOutput(null, latents.DetachFromDisposeScope());
        var (images, output) = DecodeAndFinish(progress, () => Decode(latents, r.OutputType, requested));
        return new SanaOutput(images, output);
    }

    /// <summary>
    /// Decodes latents of <paramref name="request"/>'s run (e.g. a step's, for a preview) to images as that call's end
    /// does: under resolution binning resized and center-cropped back to the requested size. Under model offload the model
    /// that ran before is active again afterwards.
    /// </summary>
    public IReadOnlyList<ImageBuffer> PreviewImages(Tensor latents, SanaRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        (int, int)? requested = request.UseResolutionBinning ? (request.Height, request.Width) : null;
        return DecodePreview(latents, () =>
        {
            using var scope = NewDisposeScope();
            return Decode(latents, OutputType.Image, requested).Images!;
        });
    }

    /// <summary>The size the run generates at (binned when asked) and the requested size to resize back to.</summary>
    private (int Height, int Width, (int Height, int Width)? Requested) BinnedSize(SanaRequest r)
    {
        if (!r.UseResolutionBinning) return (r.Height, r.Width, null);
        // diffusers: the size snaps to the closest trained aspect ratio; the image is resized back after decoding.
        if (r.Height <= 0 || r.Width <= 0)
            throw new ArgumentException($"height and width must be positive, got {r.Height}x{r.Width}.");
        var (h, w) = PixArtAspectRatios.Classify(r.Height, r.Width, PixArtAspectRatios.ForSana(Components.Transformer.Config.SampleSize));
        return (h, w, (r.Height, r.Width));
    }

    private long[] LatentShape(SanaRequest r, int height, int width)
    {
        return [MaskedPromptInputs.Batch(r), Components.Transformer.Config.InChannels, height / VaeScaleFactor, width / VaeScaleFactor];
    }

    /// <summary>The VAE decode (latents / scaling_factor), the binning resize back, the output form.</summary>
    private (IReadOnlyList<ImageBuffer>? Images, Tensor? Tensor) Decode(Tensor latents, OutputType outputType, (int Height, int Width)? requestedSize)
    {
        Components.Activate("vae");
        var vae = Components.Vae;
        var decoded = vae.Decode(latents.to(vae.WeightDtype()) / vae.Config.ScalingFactor);
        if (requestedSize is { } size) decoded = PixArtAspectRatios.ResizeAndCrop(decoded, size.Width, size.Height);
        return DecodedOutput.From(decoded, outputType, ImageProcessor);
    }

    /// <summary>
    /// diffusers' <c>encode_prompt</c> for <paramref name="request"/>: Gemma embeddings and masks of the prompts (the
    /// instruction in front, then the first token and the last max_sequence_length - 1 positions kept) or the given ones,
    /// each repeated for the images per prompt; with guidance (scale above 1) the negative side (the negative prompt at
    /// max_sequence_length without the instruction, or the given negative embeddings). Deliberate difference: a mask is
    /// repeated with its own prompt's embeddings (diffusers repeats the masks batch-wise, so with several prompts and
    /// several images per prompt its masks no longer line up with the embeddings). The tensors are the caller's.
    /// </summary>
    /// <exception cref="ArgumentException">The request is invalid (checked as <see cref="Generate"/> checks it).</exception>
    public SanaPromptEmbeddings EncodePrompt(SanaRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        var (height, width, _) = BinnedSize(request);
        CheckInputs(request, height, width);
        using var mode = inference_mode();
        using var scope = NewDisposeScope();
        var (e, m, ne, nm) = EncodeCore(request, request.GuidanceScale > 1.0);
        var result = new SanaPromptEmbeddings(e, m, ne, nm);
        foreach (var t in new[] { e, m, ne, nm }) t?.MoveToOuterDisposeScope();
        return result;
    }

    /// <summary>The body of <see cref="EncodePrompt(SanaRequest)"/>, inside the caller's scope.</summary>
    private (Tensor Embeds, Tensor Mask, Tensor? NegEmbeds, Tensor? NegMask) EncodeCore(SanaRequest r, bool cfg)
    {
        Tensor embeds, mask;
        if (r.PromptEmbeds is null)
        {
            var instruction = r.ComplexHumanInstruction ?? SanaPromptTokens.DefaultComplexHumanInstruction;
            (embeds, mask) = EncodeText(r.Prompt!.Value.Items, r.MaxSequenceLength, instruction);
            // select_index = [0] + range(-max_sequence_length + 1, 0): the first token and the last positions.
            long width = embeds.shape[1];
            var select = new long[r.MaxSequenceLength];
            for (int k = 1; k < select.Length; k++) select[k] = width - r.MaxSequenceLength + k;
            var index = tensor(select, device: embeds.device);
            embeds = embeds.index_select(1, index);
            mask = mask.index_select(1, index);
        }
        else (embeds, mask) = (r.PromptEmbeds, r.PromptAttentionMask!);
        var device = Components.Device;
        var (e, m) = Repeat(embeds.to(device), mask.to(device), r.NumImagesPerPrompt);
        if (!cfg) return (e, m, null, null);
        Tensor negEmbeds, negMask;
        if (r.NegativePromptEmbeds is null)
        {
            var negatives = (r.NegativePrompt ?? "").Broadcast((int)embeds.shape[0], "negative prompts");
            (negEmbeds, negMask) = EncodeText(negatives, r.MaxSequenceLength, []);
        }
        else (negEmbeds, negMask) = (r.NegativePromptEmbeds, r.NegativePromptAttentionMask!);
        var (ne, nm) = Repeat(negEmbeds.to(device), negMask.to(device), r.NumImagesPerPrompt);
        return (e, m, ne, nm);
    }

    private static (Tensor Embeds, Tensor Mask) Repeat(Tensor embeds, Tensor mask, int n)
    {
        long b = embeds.shape[0], s = embeds.shape[1];
        return (embeds.repeat(1, n, 1).view(b * n, s, -1), mask.repeat(1, n).view(b * n, -1));
    }

    /// <summary>Lower-cased, stripped prompts (the instruction in front) -> Gemma ids and mask -> Gemma's last hidden state.</summary>
    private (Tensor Embeds, Tensor Mask) EncodeText(IReadOnlyList<string> prompts, int maxSequenceLength, IReadOnlyList<string> instruction)
    {
        var tokenizer = Components.Tokenizer!;
        var batch = SanaPromptTokens.Tokenize(tokenizer, prompts.Select(p => p.ToLowerInvariant().Trim()).ToArray(), maxSequenceLength, instruction);
        for (int i = 0; i < batch.Count; i++)
            if (batch.Lengths[i] < batch.UntruncatedLengths[i]) OnPromptTruncated?.Invoke("tokenizer (Gemma)", batch.UntruncatedLengths[i], batch.Width);
        var device = Components.Device;
        var ids = tensor(batch.Ids, [batch.Count, batch.Width], device: device);
        var mask = tensor(batch.Mask, [batch.Count, batch.Width], device: device);
        Components.Activate("text_encoder");
        return (Components.TextEncoder!.Forward(ids, mask), mask);
    }

    private void CheckInputs(SanaRequest r, int height, int width)
    {
        var config = Components.Transformer.Config;
        if (r.CleanCaption)
            throw new NotSupportedException("clean_caption (ftfy + BeautifulSoup caption cleaning) is not implemented; prompts are lower-cased and stripped, as diffusers does without those packages.");
        int multiple = VaeScaleFactor * config.PatchSize;
        if (height <= 0 || width <= 0 || height % multiple != 0 || width % multiple != 0)
            throw new ArgumentException($"height and width must be positive multiples of {multiple} (the VAE scale factor x the patch size), got {height}x{width}; or keep resolution binning on.");
        if (r.MaxSequenceLength < 2)
            throw new ArgumentException($"max_sequence_length must be at least 2, got {r.MaxSequenceLength}.");
        if (r.PromptEmbeds is { } pe && r.GuidanceScale > 1 && r.NegativePromptEmbeds is null && pe.shape[1] != r.MaxSequenceLength)
            throw new ArgumentException($"prompt_embeds have {pe.shape[1]} positions, the negative prompt would have max_sequence_length = {r.MaxSequenceLength}: pass negative_prompt_embeds too, or embeddings of max_sequence_length positions (diffusers fails on the concatenation).");
        MaskedPromptInputs.Check(r, config.CaptionChannels, Components.TextEncoder is not null && Components.Tokenizer is not null, "Gemma",
            LatentShape(r, height, width));
        if (config.GuidanceEmbeds)
            throw new ArgumentException("This transformer embeds a guidance scale (a SANA-Sprint model): SanaPipeline does not pass one (diffusers fails on it too); SanaSprintPipeline is not implemented.");
    }
}
