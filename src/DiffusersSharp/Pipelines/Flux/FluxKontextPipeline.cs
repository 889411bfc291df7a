using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// Image editing with FLUX.1-Kontext (diffusers' <c>FluxKontextPipeline</c>): the input image is resized (to the
/// preferred Kontext resolution closest to its aspect ratio, unless <see cref="FluxKontextRequest.AutoResize"/> is off),
/// encoded to the VAE posterior mode (no random draw), packed, and appended to the noise tokens at every step with image
/// ids (1, row, column) beside the noise's (0, row, column); the prediction for the image tokens is dropped. The output
/// size comes from <see cref="FluxKontextRequest.MaxArea"/> and the requested aspect ratio. Otherwise text-to-image:
/// sigmas <c>linspace(1, 1/N, N)</c> shifted for the noise token count, embedded guidance, optional true CFG.
/// </summary>
public sealed class FluxKontextPipeline : FluxPipelineBase
{
    /// <summary>diffusers' <c>PREFERRED_KONTEXT_RESOLUTIONS</c>: (width, height), about one megapixel each.</summary>
    public static IReadOnlyList<(int Width, int Height)> PreferredResolutions { get; } =
    [
        (672, 1568), (688, 1504), (720, 1456), (752, 1392), (800, 1328), (832, 1248), (880, 1184), (944, 1104), (1024, 1024),
        (1104, 944), (1184, 880), (1248, 832), (1328, 800), (1392, 752), (1456, 720), (1504, 688), (1568, 672),
    ];

    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    public FluxKontextPipeline(FluxComponents components) : base(components) { }

    /// <summary>Loads a diffusers Flux Kontext pipeline folder or hub repo id.</summary>
    public static FluxKontextPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = FluxComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new FluxKontextPipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>A Kontext pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static FluxKontextPipeline FromPipe(FluxPipelineBase other) => new(other.Components);

    /// <summary>
    /// The output size diffusers makes of a requested size: the aspect ratio <paramref name="width"/> / <paramref name="height"/>
    /// at <paramref name="maxArea"/> pixels (Python's round: half to even), each side rounded down to <paramref name="multiple"/>.
    /// </summary>
    public static (int Height, int Width) OutputSize(int height, int width, int maxArea, int multiple = 16)
    {
        double aspect = (double)width / height;
        int w = (int)Math.Round(Math.Pow(maxArea * aspect, 0.5), MidpointRounding.ToEven);
        int h = (int)Math.Round(Math.Pow(maxArea / aspect, 0.5), MidpointRounding.ToEven);
        return (h / multiple * multiple, w / multiple * multiple);
    }

    /// <inheritdoc />
    public override (int Height, int Width) OutputSizeOf(FluxRequest request) => OutputSize(request.Height ?? DefaultSize,
        request.Width ?? DefaultSize, (request as FluxKontextRequest)?.MaxArea ?? DefaultSize * DefaultSize, VaeScaleFactor * 2);

    /// <summary>
    /// The input image's size: its own rounded down to multiples of <paramref name="multiple"/>, or with
    /// <paramref name="autoResize"/> the preferred resolution of the closest aspect ratio (ties: the smaller width).
    /// </summary>
    public static (int Height, int Width) InputImageSize(int imageHeight, int imageWidth, bool autoResize, int multiple = 16)
    {
        int h = imageHeight - imageHeight % multiple, w = imageWidth - imageWidth % multiple;
        if (h < 1 || w < 1)
            throw new ArgumentException($"The input image ({imageWidth}x{imageHeight}) must be at least {multiple} pixels in each direction.");
        if (autoResize)
        {
            double aspect = (double)w / h;
            (w, h) = PreferredResolutions.MinBy(r => (Math.Abs(aspect - (double)r.Width / r.Height), r.Width, r.Height));
        }
        return (h / multiple * multiple, w / multiple * multiple);
    }

    /// <summary>Edits <see cref="FluxKontextRequest.Image"/> as the prompt says (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public FluxOutput Generate(FluxKontextRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        int multiple = VaeScaleFactor * 2;
        if (request.MaxArea < multiple * multiple)
            throw new ArgumentException($"max_area must be at least {multiple * multiple} pixels, got {request.MaxArea}.");
        if (request.Height is <= 0 || request.Width is <= 0)
            throw new ArgumentException($"height and width must be positive (they give the aspect ratio), got {request.Height}x{request.Width}.");
        var (height, width) = OutputSize(request.Height ?? DefaultSize, request.Width ?? DefaultSize, request.MaxArea, multiple);
        if (height < multiple || width < multiple)
            throw new ArgumentException($"max_area {request.MaxArea} at the aspect ratio {request.Width ?? DefaultSize}:{request.Height ?? DefaultSize} gives {width}x{height}; raise max_area.");
        CheckInputs(request, height, width);
        int batch = BatchSize(request), channels = LatentChannels;
        var (latentH, latentW) = LatentSize(height, width);
        long[] packedShape = [batch, (latentH / 2) * (latentW / 2), channels * 4];
        if (request.Latents is { } given && !given.shape.SequenceEqual(packedShape))
            throw new ArgumentException($"latents must be packed [{string.Join(", ", packedShape)}], got [{string.Join(", ", given.shape)}].");

        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        var image = request.Image is null ? null : PreprocessKontextInput(request.Image, request.AutoResize, batch, "image");
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (positive, negative) = EncodePrompts(request, batch);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        // prepare_latents: the image's posterior mode (no draw), packed at its own size, ids (1, row, column); then the noise.
        var dtype = positive.PromptEmbeds.dtype;
        Tensor? imageLatents = null;
        var ids = LatentImageIds(latentH / 2, latentW / 2, device, dtype);
        if (image is not null)
        {
            (imageLatents, var imageIds) = KontextTokens(EncodeImage(image, request, dtype, batch, mode: true), dtype);
            ids = cat([ids, imageIds], 0);
        }
        Tensor latents = request.Latents is { } initial
            ? initial.to(dtype, device, copy: true)
            : PackLatents(RandomDraws.Randn([batch, channels, latentH, latentW], request.Generator, request.Generators, dtype, device));

        using var scheduler = CreateScheduler(request, (int)latents.shape[1]);
        scheduler.SetBeginIndex(0);
        latents = Denoise(latents, positive, negative, ids, GuidanceTensor(request, batch), scheduler, scheduler.Timesteps, request,
            progress, cancellationToken, new DenoiseHooks { Context = imageLatents });
        return Decode(latents, request.OutputType, height, width, progress);
    }
}
