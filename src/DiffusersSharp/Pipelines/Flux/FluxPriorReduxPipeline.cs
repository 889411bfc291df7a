using DiffusersSharp.Hub;
using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.ImageEncoders;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// FLUX.1-Redux's prior (diffusers' <c>FluxPriorReduxPipeline</c>, black-forest-labs/FLUX.1-Redux-dev): turns images into
/// the prompt embeddings a Flux pipeline takes. Each image goes through the SigLIP processor (RGB, BICUBIC resize to the
/// processor's size, [-1, 1]) and <see cref="SiglipVisionModel"/> (last_hidden_state, 729 tokens of 1152 for
/// siglip-so400m-patch14-384), then <see cref="ReduxImageEncoder"/> (tokens of txt_in_features, 4096); each image's text
/// part (the T5 embeddings of a prompt, given embeddings, or zeros [512, txt_in_features]) is followed by its image
/// tokens; every image's tokens and pooled embedding (CLIP-L's, or zeros of width 768) are multiplied by its scale and
/// summed over the images. Pass <see cref="FluxPriorReduxOutput"/>'s tensors to a Flux pipeline with no prompt:
/// <code>
/// using var flux = FluxPipeline.FromPretrained("black-forest-labs/FLUX.1-dev", options);
/// using var redux = FluxPriorReduxPipeline.FromPretrained("black-forest-labs/FLUX.1-Redux-dev", options);
/// using var prior = redux.Generate(new FluxPriorReduxRequest { Image = ImageFile.LoadRgb("style.png") });
/// using var image = flux.Generate(new FluxRequest { PromptEmbeds = prior.PromptEmbeds, PooledPromptEmbeds = prior.PooledPromptEmbeds, GuidanceScale = 2.5 });
/// </code>
/// </summary>
/// <remarks>
/// Where this differs from diffusers (documented choices): the zero text part has txt_in_features columns (diffusers
/// hard-codes 4096, which FLUX.1-Redux's txt_in_features is; another width could not be concatenated); given
/// <see cref="FluxPriorReduxRequest.PromptEmbeds"/> are used also without text encoders (diffusers replaces them with
/// zeros then); a prompt without text encoders is refused (diffusers ignores it with a warning); with text encoders and
/// neither prompt nor embeddings the zeros are used (diffusers fails there).
/// </remarks>
public sealed class FluxPriorReduxPipeline : IDisposable
{
    /// <summary>The T5 sequence length of the text part (diffusers' hard-coded max_sequence_length).</summary>
    public const int MaxSequenceLength = 512;

    /// <summary>The width of the zero pooled embedding without text encoders (diffusers' hard-coded 768: CLIP-L's width,
    /// FLUX.1's pooled_projection_dim).</summary>
    public const int ZeroPooledPromptEmbedsDim = 768;

    private readonly FluxComponents? _textEncoders;
    private bool _disposed;

    /// <summary>
    /// Wraps loaded models, which the pipeline then owns (disposes). <paramref name="textEncoders"/>: the components of a
    /// Flux pipeline whose CLIP-L and T5 (with tokenizers) encode <see cref="FluxPriorReduxRequest.Prompt"/> (diffusers'
    /// <c>FluxPriorReduxPipeline.from_pretrained(redux, text_encoder=pipe.text_encoder, ...)</c>); the pipeline takes a
    /// reference on them (they stay loaded until it is disposed too). The prior's tensors live on
    /// <paramref name="device"/> (default: the image encoder's).
    /// </summary>
    /// <exception cref="ArgumentException">The parts do not fit each other (widths, image size), or the text components
    /// have no text encoders or a T5 of another width than txt_in_features.</exception>
    public FluxPriorReduxPipeline(SiglipVisionModel imageEncoder, SiglipImageProcessor featureExtractor, ReduxImageEncoder imageEmbedder,
        FluxComponents? textEncoders = null, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(imageEncoder);
        ArgumentNullException.ThrowIfNull(featureExtractor);
        ArgumentNullException.ThrowIfNull(imageEmbedder);
        CheckParts(imageEncoder, featureExtractor, imageEmbedder, textEncoders);
        textEncoders?.Acquire();
        _textEncoders = textEncoders;
        ImageEncoder = imageEncoder;
        FeatureExtractor = featureExtractor;
        ImageEmbedder = imageEmbedder;
        Device = device ?? imageEncoder.Device;
    }

    /// <summary>SigLIP (diffusers' <c>image_encoder</c>).</summary>
    public SiglipVisionModel ImageEncoder { get; }

    /// <summary>The SigLIP image processor (diffusers' <c>feature_extractor</c>).</summary>
    public SiglipImageProcessor FeatureExtractor { get; }

    /// <summary>The Redux projection (diffusers' <c>image_embedder</c>).</summary>
    public ReduxImageEncoder ImageEmbedder { get; }

    /// <summary>The Flux components whose text encoders encode prompts, or null (then only embeddings or zeros).</summary>
    public FluxComponents? TextEncoders => _textEncoders;

    /// <summary>Where the prior's tensors live.</summary>
    public Device Device { get; }

    /// <summary>Called when a prompt is cut to a tokenizer's limit (tokenizer, untruncated length, limit).</summary>
    public Action<string, int, int>? OnPromptTruncated { get; set; }

    /// <summary>
    /// Loads a diffusers FLUX.1-Redux folder or hub repo id (model_index.json <c>FluxPriorReduxPipeline</c>: image_encoder,
    /// feature_extractor, image_embedder) in <see cref="PipelineLoadOptions.Dtype"/> on its device (diffusers' example uses
    /// bfloat16). The folder's text encoders must be null (as in FLUX.1-Redux-dev); pass a loaded Flux pipeline's
    /// components as <paramref name="textEncoders"/> to encode prompts with its CLIP-L and T5. Model offload is not
    /// applied to the prior's own models (they load on the device); the text encoders follow their components' offload.
    /// </summary>
    /// <exception cref="InvalidDataException">The folder is not a FLUX.1-Redux pipeline or lacks a component.</exception>
    /// <exception cref="UnknownComponentException">model_index.json names a class DiffusersSharp does not implement.</exception>
    /// <exception cref="NotSupportedException">The folder has its own text encoders, or its image processor config asks for
    /// other processing.</exception>
    /// <exception cref="ArgumentException">The parts do not fit each other or the text encoders.</exception>
    public static FluxPriorReduxPipeline FromPretrained(string model, PipelineLoadOptions? options = null, FluxComponents? textEncoders = null,
        CancellationToken cancellationToken = default)
    {
        options ??= new PipelineLoadOptions();
        var device = options.ParsedDevice; // fail on a bad device before any download
        string folder = ModelSource.Resolve(model, options.HubOptions, options.DownloadProgress, cancellationToken);
        var index = ModelIndex.Read(folder);
        if (index.ClassName != HubFileSelector.FluxPriorReduxPipelineClass)
            throw new InvalidDataException($"{folder}: model_index.json names {index.ClassName}, not {HubFileSelector.FluxPriorReduxPipelineClass} (a FLUX.1-Redux folder such as black-forest-labs/FLUX.1-Redux-dev).");
        (string Name, string Class)[] required = [("image_encoder", "SiglipVisionModel"), ("feature_extractor", "SiglipImageProcessor"), ("image_embedder", "ReduxImageEncoder")];
        foreach (var (name, cls) in required)
        {
            if (!index.Components.TryGetValue(name, out var spec) || spec.IsEmpty)
                throw new InvalidDataException($"{folder}: model_index.json has no '{name}' component; FLUX.1-Redux needs it.");
            ModelRegistry.KindOf(name, spec.ClassName!);
            if (spec.ClassName != cls)
                throw new InvalidDataException($"{folder}: component '{name}' is a {spec.ClassName}; FLUX.1-Redux's is a {cls}.");
        }
        foreach (var name in new[] { "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2" })
            if (index.Components.TryGetValue(name, out var spec) && !spec.IsEmpty)
                throw new NotSupportedException($"{folder}: model_index.json names its own '{name}'; FLUX.1-Redux folders have none here. Pass a Flux pipeline's components as the text encoders instead.");

        var loader = new ComponentLoader(folder, cancellationToken);
        try
        {
            var featureExtractor = SiglipImageProcessor.FromPretrained(loader.Sub("feature_extractor"));
            var imageEncoder = loader.Load("image_encoder", () => SiglipVisionModel.FromPretrained(loader.Sub("image_encoder"), options.Dtype, device, options.Variant));
            var imageEmbedder = loader.Load("image_embedder", () => ReduxImageEncoder.FromPretrained(loader.Sub("image_embedder"), options.Dtype, device, options.Variant));
            return new FluxPriorReduxPipeline(imageEncoder, featureExtractor, imageEmbedder, textEncoders, device);
        }
        catch
        {
            loader.DisposeLoaded();
            throw;
        }
    }

    /// <summary>Throws unless the parts fit each other and the text encoders (before anything is kept).</summary>
    private static void CheckParts(SiglipVisionModel imageEncoder, SiglipImageProcessor featureExtractor, ReduxImageEncoder imageEmbedder, FluxComponents? textEncoders)
    {
        var vision = imageEncoder.Config;
        if (featureExtractor.Size != vision.ImageSize)
            throw new ArgumentException($"The feature extractor resizes to {featureExtractor.Size}, the image encoder takes {vision.ImageSize} x {vision.ImageSize} pixels.");
        if (imageEmbedder.Config.ReduxDim != vision.HiddenSize)
            throw new ArgumentException($"The image embedder takes tokens of width redux_dim {imageEmbedder.Config.ReduxDim}, the image encoder gives {vision.HiddenSize}.");
        if (textEncoders is null) return;
        if (textEncoders.TextEncoder is null || textEncoders.TextEncoder2 is null || textEncoders.Tokenizer is null || textEncoders.Tokenizer2 is null)
            throw new ArgumentException("The Flux components given as text encoders have no text encoders (CLIP-L, T5 and their tokenizers).");
        if (textEncoders.TextEncoder2.Config.DModel != imageEmbedder.Config.TxtInFeatures)
            throw new ArgumentException($"T5's width (d_model {textEncoders.TextEncoder2.Config.DModel}) is not the image embedder's txt_in_features ({imageEmbedder.Config.TxtInFeatures}): the text and image tokens could not be joined.");
    }

    /// <summary>
    /// Checks <paramref name="r"/> before any compute (diffusers' <c>check_inputs</c> and what a .NET caller needs); returns
    /// the images.
    /// </summary>
    /// <exception cref="ArgumentException">The request is invalid, with the reason.</exception>
    public IReadOnlyList<ImageBuffer> CheckInputs(FluxPriorReduxRequest r)
    {
        ArgumentNullException.ThrowIfNull(r);
        if (r.Image is not null && r.Images is not null)
            throw new ArgumentException("Give one image (Image) or a list of images (Images), not both.");
        var images = r.AllImages ?? throw new ArgumentException("Give an image (Image) or images (Images) to the Redux prior.");
        if (images.Count == 0) throw new ArgumentException("Images is empty; give at least one image.");
        for (int i = 0; i < images.Count; i++)
            if (images[i] is null) throw new ArgumentException($"Images[{i}] is null.");
        int n = images.Count;
        if (r.Prompt is not null && r.PromptEmbeds is not null)
            throw new ArgumentException("Give either a prompt or prompt_embeds, not both.");
        if (r.Prompt2 is not null && r.PromptEmbeds is not null)
            throw new ArgumentException("Give either prompt_2 or prompt_embeds, not both.");
        if (r.Prompt2 is not null && r.Prompt is null)
            throw new ArgumentException("prompt_2 needs a prompt too (it only replaces the prompt for T5).");
        if (r.Prompt is { } prompt)
        {
            if (_textEncoders is null)
                throw new ArgumentException("This Redux prior has no text encoders, so it cannot encode a prompt: create it with a Flux pipeline's components as the text encoders, or give prompt_embeds.");
            if (prompt.Count != 1 && prompt.Count != n)
                throw new ArgumentException($"number of prompts must be equal to number of images, but {prompt.Count} prompts were provided and {n} images.");
            if (r.Prompt2 is { Count: var c2 } && c2 != 1 && c2 != n)
                throw new ArgumentException($"prompt_2 has {c2} entries for {n} images; give one or one per image.");
        }
        if (r.PromptEmbeds is not null && r.PooledPromptEmbeds is null)
            throw new ArgumentException("If prompt_embeds are provided, pooled_prompt_embeds also have to be passed (from the same text encoders).");
        if (r.PooledPromptEmbeds is not null && r.PromptEmbeds is null)
            throw new ArgumentException("pooled_prompt_embeds needs prompt_embeds too.");
        if (r.PromptEmbeds is { } embeds)
        {
            long width = ImageEmbedder.Config.TxtInFeatures;
            if (embeds.dim() != 3 || embeds.shape[0] != n || embeds.shape[2] != width || embeds.shape[1] < 1)
                throw new ArgumentException($"prompt_embeds must be [{n} (one row per image), S, {width} (txt_in_features)], got [{string.Join(", ", embeds.shape)}].");
            var pooled = r.PooledPromptEmbeds!;
            if (pooled.dim() != 2 || pooled.shape[0] != n || pooled.shape[1] < 1)
                throw new ArgumentException($"pooled_prompt_embeds must be [{n} (one row per image), P], got [{string.Join(", ", pooled.shape)}].");
            if (!embeds.is_floating_point() || !pooled.is_floating_point())
                throw new ArgumentException("prompt_embeds and pooled_prompt_embeds must be floating-point tensors.");
        }
        Scales(r.PromptEmbedsScale, n, "prompt_embeds_scale");
        Scales(r.PooledPromptEmbedsScale, n, "pooled_prompt_embeds_scale");
        return images;
    }

    /// <summary>One finite scale per image from one value or a list of one per image.</summary>
    private static double[] Scales(OneOrMany<double> scale, int images, string name)
    {
        ArgumentNullException.ThrowIfNull(scale, name);
        if (scale.Nested is not null) throw new ArgumentException($"{name} takes one value or one per image, not lists of lists.");
        var values = scale.List ?? Enumerable.Repeat(scale.Scalar, images).ToArray();
        if (values.Length != images)
            throw new ArgumentException($"number of weights must be equal to number of images, but {values.Length} {name} weights were provided and {images} images.");
        foreach (var v in values)
            if (!double.IsFinite(v)) throw new ArgumentException($"{name} must hold finite numbers, got {v}.");
        return values;
    }

    /// <summary>
    /// diffusers' <c>__call__</c>: encodes the images, builds each image's text part, scales and sums them into one
    /// conditioning [1, S + tokens, txt_in_features] and [1, P].
    /// </summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between stages).</exception>
    public FluxPriorReduxOutput Generate(FluxPriorReduxRequest request, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var images = CheckInputs(request);
        int n = images.Count;
        var promptScales = Scales(request.PromptEmbedsScale, n, "prompt_embeds_scale");
        var pooledScales = Scales(request.PooledPromptEmbedsScale, n, "pooled_prompt_embeds_scale");
        cancellationToken.ThrowIfCancellationRequested();

        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        // 3. Image embeddings: SigLIP's last hidden state of the processed images, then the Redux projection.
        Tensor imageEmbeds;
        using (var pixels = FeatureExtractor.Preprocess(images))
        using (var encoded = ImageEncoder.Forward(pixels.to(ImageEncoder.Dtype, ImageEncoder.Device)))
        {
            cancellationToken.ThrowIfCancellationRequested();
            imageEmbeds = ImageEmbedder.forward(encoded.LastHiddenState.to(ImageEmbedder.Device)).to(Device);
        }
        cancellationToken.ThrowIfCancellationRequested();

        // The text part: the text encoders' (a prompt, or given embeddings), else zeros as diffusers hard-codes them.
        Tensor promptEmbeds, pooledPromptEmbeds;
        if (request.PromptEmbeds is { } given)
        {
            promptEmbeds = given.to(Device);
            pooledPromptEmbeds = request.PooledPromptEmbeds!.to(Device, copy: true);
        }
        else if (request.Prompt is { } prompt)
        {
            var components = _textEncoders!;
            var prompts = new PromptList(prompt.Broadcast(n, "prompt"));
            PromptList? prompts2 = request.Prompt2 is { } p2 ? new PromptList(p2.Broadcast(n, "prompt_2")) : (PromptList?)null;
            var encoder = components.CreatePromptEncoder(OnPromptTruncated);
            try
            {
                using var encodedPrompt = encoder.Encode(prompts, prompts2, null, null, 1, MaxSequenceLength, components.Device,
                    components.TextEncoder!.WeightDtype());
                promptEmbeds = encodedPrompt.PromptEmbeds.to(Device, copy: true);
                pooledPromptEmbeds = encodedPrompt.PooledPromptEmbeds.to(Device, copy: true);
            }
            finally
            {
                components.OffloadAll();
            }
        }
        else
        {
            promptEmbeds = zeros([n, MaxSequenceLength, ImageEmbedder.Config.TxtInFeatures], dtype: imageEmbeds.dtype, device: Device);
            pooledPromptEmbeds = zeros([n, ZeroPooledPromptEmbedsDim], dtype: imageEmbeds.dtype, device: Device);
        }
        cancellationToken.ThrowIfCancellationRequested();

        // Scale (in the image embeddings' dtype, as diffusers builds the scale tensor) and sum over the images.
        var joined = cat([promptEmbeds, imageEmbeds], dim: 1);
        joined.mul_(tensor(promptScales, dtype: ScalarType.Float64, device: Device).to(imageEmbeds.dtype).view(-1, 1, 1));
        pooledPromptEmbeds.mul_(tensor(pooledScales, dtype: ScalarType.Float64, device: Device).to(imageEmbeds.dtype).view(-1, 1));
        var summed = joined.sum(dim: 0, keepdim: true);
        var pooledSummed = pooledPromptEmbeds.sum(dim: 0, keepdim: true);
        return new FluxPriorReduxOutput(summed.MoveToOuterDisposeScope(), pooledSummed.MoveToOuterDisposeScope());
    }

    /// <summary>Frees the prior's models and gives back its reference on the text encoders' components.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        ImageEncoder.Dispose();
        ImageEmbedder.Dispose();
        _textEncoders?.Release();
    }
}
