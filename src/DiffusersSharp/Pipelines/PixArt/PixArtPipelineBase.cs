using DiffusersSharp.Images;
using DiffusersSharp.Models;
using DiffusersSharp.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.PixArt;

/// <summary>
/// What PixArt-Σ and PixArt-α share (diffusers' <c>PixArtSigmaPipeline</c> / <c>PixArtAlphaPipeline</c>, which differ only
/// in the T5 length, α's resolution / aspect-ratio micro-conditions and its one-step rule): prompt -> lower-cased T5 tokens
/// with their attention mask -> T5 embeddings (the negative prompt padded to the same length) -> noise
/// [B, 4, H/8, W/8] × init_noise_sigma -> scheduler steps over the transformer (CFG on the batched negative + positive
/// halves, the caption mask applied in cross-attention, the learned-variance half dropped) -> VAE decode.
/// </summary>
public abstract class PixArtPipelineBase : DiffusionPipelineBase<PixArtComponents>
{
    /// <summary>Takes a reference on <paramref name="components"/>; they are freed when the last pipeline using them is disposed.</summary>
    protected PixArtPipelineBase(PixArtComponents components) : base(components)
    {
        ImageProcessor = new VaeImageProcessor(new VaeImageProcessorConfig { VaeScaleFactor = components.Vae.VaeScaleFactor });
    }

    /// <summary>Image post-processing (diffusers' <c>image_processor</c>).</summary>
    public VaeImageProcessor ImageProcessor { get; }

    /// <summary>Called when a prompt is cut to the T5 limit (tokenizer, untruncated length, limit).</summary>
    public Action<string, int, int>? OnPromptTruncated { get; set; }

    /// <summary>The VAE's spatial scale factor (8).</summary>
    public int VaeScaleFactor => Components.Vae.VaeScaleFactor;

    /// <summary>Default height and width: the transformer's sample_size × the VAE scale factor.</summary>
    public int DefaultSize => Components.Transformer.Config.SampleSize * VaeScaleFactor;

    /// <summary>The T5 token limit when the request leaves it null (Σ 300, α 120).</summary>
    public abstract int DefaultMaxSequenceLength { get; }

    /// <summary>Whether this pipeline passes resolution and aspect ratio to the transformer (α at sample_size 128).</summary>
    protected abstract bool PassesMicroConditions { get; }

    /// <summary>diffusers' pipeline class name (for messages).</summary>
    protected abstract string PipelineName { get; }

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="NotSupportedException">clean_caption was asked for.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public PixArtOutput Generate(PixArtRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        var r = request;
        int height = r.Height ?? DefaultSize, width = r.Width ?? DefaultSize;
        (int Height, int Width)? requested = null;
        if (r.UseResolutionBinning)
        {
            // diffusers: the size snaps to the closest trained aspect ratio; the image is resized back after decoding.
            if (height <= 0 || width <= 0)
                throw new ArgumentException($"height and width must be positive, got {height}x{width}.");
            requested = (height, width);
            (height, width) = PixArtAspectRatios.Classify(height, width, PixArtAspectRatios.For(Components.Transformer.Config.SampleSize));
        }
        int maxLength = r.MaxSequenceLength ?? DefaultMaxSequenceLength;
        using var scheduler = Components.CreateScheduler();
        CheckInputs(r, height, width, maxLength, scheduler);
        using var mode = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        var transformer = Components.Transformer;
        bool cfg = r.GuidanceScale > 1.0;

        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (embeds, mask, negEmbeds, negMask) = EncodePrompt(r, cfg, maxLength);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        if (cfg)
        {
            embeds = cat([negEmbeds!, embeds], 0);
            mask = cat([negMask!, mask], 0);
        }

        scheduler.SetTimesteps(r.NumInferenceSteps, device);
        var timesteps = scheduler.TimestepValues.ToArray();
        long batch = (r.PromptEmbeds?.shape[0] ?? r.Prompt!.Value.Count) * r.NumImagesPerPrompt;
        int channels = transformer.Config.InChannels;
        long[] shape = [batch, channels, height / VaeScaleFactor, width / VaeScaleFactor];
        var latents = (r.Latents is { } given ? given.to(embeds.dtype, device) : RandomDraws.Randn(shape, r.Generator, r.Generators, embeds.dtype, device))
            * scheduler.InitNoiseSigma;

        Tensor? resolution = null, aspectRatio = null;
        if (PassesMicroConditions)
        {
            // diffusers: tensor([height, width]) and tensor([float(height / width)]) per image, doubled under CFG.
            resolution = tensor(new float[] { height, width }).repeat(batch, 1).to(embeds.dtype, device);
            aspectRatio = tensor(new float[] { (float)((double)height / width) }).repeat(batch, 1).to(embeds.dtype, device);
            if (cfg)
            {
                resolution = cat([resolution, resolution], 0);
                aspectRatio = cat([aspectRatio, aspectRatio], 0);
            }
        }

        var generator = r.Generator ?? r.Generators?[0];
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
                modelInput = scheduler.ScaleModelInput(modelInput, t);
                var timestep = full(modelInput.shape[0], t, dtype: ScalarType.Float32, device: device);
                var noisePred = transformer.forward(modelInput, embeds, timestep, mask, resolution, aspectRatio);
                if (cfg)
                {
                    var halves = noisePred.chunk(2);
                    noisePred = halves[0] + r.GuidanceScale * (halves[1] - halves[0]);
                }
                if (learnedSigma) noisePred = noisePred.chunk(2, 1)[0];
                Tensor next;
                if (timesteps.Length == 1 && this is PixArtAlphaPipeline && scheduler is LCMScheduler lcm)
                {
                    // PixArtAlphaPipeline at one step takes the scheduler's second output (the denoised sample).
                    (_, next) = lcm.StepWithDenoised(noisePred, t, latents, generator);
                }
                else next = SchedulerSteps.Step(scheduler, noisePred, t, latents, r.Eta, generator, r.Generators);
                next.MoveToOuterDisposeScope();
                latents.Dispose();
                latents = next;
            }
            progress?.Report(new PipelineProgress("denoise", i + 1, timesteps.Length));
            if (StepEndContext.Run(r.CallbackOnStepEnd, i, timesteps.Length, t, r.GuidanceScale, ref latents, ref embeds)) break;
        }

        if (r.OutputType == OutputType.Latent)
            return new PixArtOutput(null, latents.DetachFromDisposeScope());
        var (images, output) = DecodeAndFinish(progress, () => Decode(latents, r.OutputType, requested));
        return new PixArtOutput(images, output);
    }

    /// <summary>
    /// Decodes latents of <paramref name="request"/>'s run (e.g. a step's, for a preview) to images as that call's end does:
    /// under resolution binning resized and center-cropped back to the requested size. Under model offload the model that
    /// ran before is active again afterwards.
    /// </summary>
    public IReadOnlyList<ImageBuffer> PreviewImages(Tensor latents, PixArtRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        (int, int)? requested = request.UseResolutionBinning ? (request.Height ?? DefaultSize, request.Width ?? DefaultSize) : null;
        return DecodePreview(latents, () =>
        {
            using var scope = NewDisposeScope();
            return Decode(latents, OutputType.Image, requested).Images!;
        });
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
    /// diffusers' <c>encode_prompt</c>: T5 embeddings and masks of the prompts (or the given ones), each repeated for the
    /// images per prompt; under CFG the negative side (the negative prompt tokenized to the prompt side's length).
    /// </summary>
    private (Tensor Embeds, Tensor Mask, Tensor? NegEmbeds, Tensor? NegMask) EncodePrompt(PixArtRequest r, bool cfg, int maxLength)
    {
        var device = Components.Device;
        var dtype = Components.TextEncoder?.WeightDtype() ?? Components.Transformer.Dtype;
        Tensor embeds, mask;
        if (r.PromptEmbeds is null)
            (embeds, mask) = EncodeText(r.Prompt!.Value.Items, maxLength);
        else
            (embeds, mask) = (r.PromptEmbeds, r.PromptAttentionMask!);
        embeds = embeds.to(dtype, device);
        mask = mask.to(device);
        long bsEmbed = embeds.shape[0];
        int n = r.NumImagesPerPrompt;
        embeds = embeds.repeat(1, n, 1).view(bsEmbed * n, embeds.shape[1], -1);
        mask = mask.repeat(1, n).view(bsEmbed * n, -1);
        if (!cfg) return (embeds, mask, null, null);
        Tensor negEmbeds, negMask;
        if (r.NegativePromptEmbeds is null)
        {
            var negatives = (r.NegativePrompt ?? "").Broadcast((int)bsEmbed, "negative prompts");
            (negEmbeds, negMask) = EncodeText(negatives, (int)embeds.shape[1]);
        }
        else (negEmbeds, negMask) = (r.NegativePromptEmbeds, r.NegativePromptAttentionMask!);
        negEmbeds = negEmbeds.to(dtype, device);
        negMask = negMask.to(device);
        long negLen = negEmbeds.shape[1];
        negEmbeds = negEmbeds.repeat(1, n, 1).view(bsEmbed * n, negLen, -1);
        negMask = negMask.repeat(1, n).view(bsEmbed * n, -1);
        return (embeds, mask, negEmbeds, negMask);
    }

    /// <summary>Lower-cased, stripped prompts -> T5 ids padded to <paramref name="maxLength"/> and their mask -> T5 under the mask.</summary>
    private (Tensor Embeds, Tensor Mask) EncodeText(IReadOnlyList<string> prompts, int maxLength)
    {
        var (idTensor, maskTensor) = PromptTokens.IdsAndMask(Components.Tokenizer!, prompts.Select(p => p.ToLowerInvariant().Trim()).ToArray(),
            maxLength, Components.Device, "tokenizer (T5)", OnPromptTruncated);
        Components.Activate("text_encoder");
        return (Components.TextEncoder!.Forward(idTensor, maskTensor), maskTensor);
    }

    private void CheckInputs(PixArtRequest r, int height, int width, int maxLength, IDiffusionScheduler scheduler)
    {
        var config = Components.Transformer.Config;
        if (r.CleanCaption)
            throw new NotSupportedException("clean_caption (ftfy + BeautifulSoup caption cleaning) is not implemented; prompts are lower-cased and stripped, as diffusers does without those packages.");
        int multiple = VaeScaleFactor * config.PatchSize;
        if (height <= 0 || width <= 0 || height % 8 != 0 || width % 8 != 0 || height % multiple != 0 || width % multiple != 0)
            throw new ArgumentException($"height and width must be positive multiples of {Math.Max(8, multiple)} (the VAE scale factor x the patch size), got {height}x{width}.");
        if (r.NumInferenceSteps == 1 && this is PixArtAlphaPipeline && scheduler is not LCMScheduler)
            throw new ArgumentException($"{PipelineName} takes the scheduler's denoised output at 1 step, which {scheduler.ClassName} does not give (diffusers fails there too); use 2 or more steps, or an LCM scheduler.");
        if (!(r.Eta >= 0))
            throw new ArgumentException($"eta must be a number of at least 0, got {r.Eta}.");
        if (maxLength < 1)
            throw new ArgumentException($"max_sequence_length must be at least 1, got {maxLength}.");
        long[] latentShape = [MaskedPromptInputs.Batch(r), config.InChannels, height / VaeScaleFactor, width / VaeScaleFactor];
        MaskedPromptInputs.Check(r, Components.Transformer.TextWidth, Components.TextEncoder is not null && Components.Tokenizer is not null, "T5", latentShape);
        if (config.UsesAdditionalConditions && !PassesMicroConditions)
            throw new ArgumentException($"This transformer takes resolution / aspect-ratio conditions (use_additional_conditions), which {PipelineName} only passes at sample_size 128; diffusers fails on it too.");
    }
}
