using DiffusersSharp.Images;
using DiffusersSharp.Models;
using DiffusersSharp.Pipelines.PixArt;
using DiffusersSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Sana;

/// <summary>
/// What SanaPipeline and SanaSprintPipeline share: prompt -> lower-cased, the complex human instruction in front ->
/// Gemma-2 tokens and mask -> Gemma-2's last hidden state, the first token and the last max_sequence_length - 1 positions
/// kept (diffusers' <c>encode_prompt</c>); resolution binning; the AutoencoderDC decode (latents / scaling_factor) and
/// the resize back to the requested size.
/// </summary>
public abstract class SanaPipelineBase : DiffusionPipelineBase<SanaComponents>
{
    /// <summary>Takes a reference on <paramref name="components"/>; they are freed when the last pipeline using them is disposed.</summary>
    private protected SanaPipelineBase(SanaComponents components) : base(components)
    {
        ImageProcessor = new VaeImageProcessor(new VaeImageProcessorConfig { VaeScaleFactor = components.VaeScaleFactor });
    }

    /// <summary>Image post-processing (diffusers' <c>image_processor</c>).</summary>
    public VaeImageProcessor ImageProcessor { get; }

    /// <summary>Called when a prompt is cut to the token limit (tokenizer, untruncated length, limit).</summary>
    public Action<string, int, int>? OnPromptTruncated { get; set; }

    /// <summary>The VAE's spatial scale factor (32 for Sana's DC-AE).</summary>
    public int VaeScaleFactor => Components.VaeScaleFactor;

    /// <summary>The resolution bins for a transformer of <paramref name="sampleSize"/> (diffusers' per-pipeline tables).</summary>
    private protected abstract IReadOnlyList<(string Ratio, int Height, int Width)> AspectRatioBins(int sampleSize);

    /// <summary>What both Sana pipelines check first: no clean_caption, the size on the latent grid, a usable
    /// max_sequence_length.</summary>
    private protected void CheckSizeAndText(SanaRequest r, int height, int width)
    {
        var config = Components.Transformer.Config;
        if (r.CleanCaption)
            throw new NotSupportedException("clean_caption (ftfy + BeautifulSoup caption cleaning) is not implemented; prompts are lower-cased and stripped, as diffusers does without those packages.");
        int multiple = VaeScaleFactor * config.PatchSize;
        if (height <= 0 || width <= 0 || height % multiple != 0 || width % multiple != 0)
            throw new ArgumentException($"height and width must be positive multiples of {multiple} (the VAE scale factor x the patch size), got {height}x{width}; or keep resolution binning on.");
        if (r.MaxSequenceLength < 2)
            throw new ArgumentException($"max_sequence_length must be at least 2, got {r.MaxSequenceLength}.");
    }

    /// <summary>The pipeline's checks of a request at the (binned) size, before any compute.</summary>
    private protected abstract void CheckInputs(SanaRequest r, int height, int width);

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
    private protected (int Height, int Width, (int Height, int Width)? Requested) BinnedSize(SanaRequest r)
    {
        if (!r.UseResolutionBinning) return (r.Height, r.Width, null);
        // diffusers: the size snaps to the closest trained aspect ratio; the image is resized back after decoding.
        if (r.Height <= 0 || r.Width <= 0)
            throw new ArgumentException($"height and width must be positive, got {r.Height}x{r.Width}.");
        var (h, w) = PixArtAspectRatios.Classify(r.Height, r.Width, AspectRatioBins(Components.Transformer.Config.SampleSize));
        return (h, w, (r.Height, r.Width));
    }

    private protected long[] LatentShape(SanaRequest r, int height, int width)
    {
        return [MaskedPromptInputs.Batch(r), Components.Transformer.Config.InChannels, height / VaeScaleFactor, width / VaeScaleFactor];
    }

    /// <summary>The VAE decode (latents / scaling_factor), the binning resize back, the output form.</summary>
    private protected (IReadOnlyList<ImageBuffer>? Images, Tensor? Tensor) Decode(Tensor latents, OutputType outputType, (int Height, int Width)? requestedSize)
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
    /// <exception cref="ArgumentException">The request is invalid (checked as the call checks it).</exception>
    public MaskedPromptEmbeddings EncodePrompt(SanaRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        var (height, width, _) = BinnedSize(request);
        CheckInputs(request, height, width);
        using var mode = inference_mode();
        using var scope = NewDisposeScope();
        var (e, m, ne, nm) = EncodeCore(request, request.GuidanceScale > 1.0);
        var result = new MaskedPromptEmbeddings(e, m, ne, nm);
        foreach (var t in new[] { e, m, ne, nm }) t?.MoveToOuterDisposeScope();
        return result;
    }

    /// <summary>The body of <see cref="EncodePrompt(SanaRequest)"/>, inside the caller's scope.</summary>
    private protected (Tensor Embeds, Tensor Mask, Tensor? NegEmbeds, Tensor? NegMask) EncodeCore(SanaRequest r, bool cfg)
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
        var (e, m) = MaskedPromptInputs.Repeat(embeds.to(device), mask.to(device), r.NumImagesPerPrompt);
        if (!cfg) return (e, m, null, null);
        Tensor negEmbeds, negMask;
        if (r.NegativePromptEmbeds is null)
        {
            var negatives = (r.NegativePrompt ?? "").Broadcast((int)embeds.shape[0], "negative prompts");
            (negEmbeds, negMask) = EncodeText(negatives, r.MaxSequenceLength, []);
        }
        else (negEmbeds, negMask) = (r.NegativePromptEmbeds, r.NegativePromptAttentionMask!);
        var (ne, nm) = MaskedPromptInputs.Repeat(negEmbeds.to(device), negMask.to(device), r.NumImagesPerPrompt);
        return (e, m, ne, nm);
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
}
