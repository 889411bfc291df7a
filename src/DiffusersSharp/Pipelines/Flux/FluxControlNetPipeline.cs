using DiffusersSharp.Models;
using DiffusersSharp.Models.ControlNets;
using DiffusersSharp.Schedulers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// ControlNet text-to-image parameters (diffusers' <c>FluxControlNetPipeline.__call__</c>): the text-to-image ones with
/// its defaults (guidance scale 7.0, 28 steps) plus the control image, the conditioning scale and the guidance window.
/// Not here: ControlNet-Union's <c>control_mode</c>, several ControlNets, IP-Adapter inputs.
/// </summary>
public record FluxControlNetRequest : FluxRequest
{
    /// <summary>diffusers' FluxControlNetPipeline default guidance scale (7.0).</summary>
    public const double DefaultControlNetGuidanceScale = 7.0;

    /// <summary>A request with diffusers' FluxControlNetPipeline defaults.</summary>
    public FluxControlNetRequest() => GuidanceScale = DefaultControlNetGuidanceScale;

    /// <summary>
    /// The control image (RGB; resized to the output size and normalized to [-1, 1]), or a [B, 3, H, W] tensor in [-1, 1]
    /// of the output size, taken as is (diffusers skips preprocessing for tensors). One image is repeated to the batch.
    /// </summary>
    public PipelineImage? ControlImage { get; init; }

    /// <summary>The factor on the ControlNet's residuals (diffusers' <c>controlnet_conditioning_scale</c>, default 1.0).</summary>
    public double ControlNetConditioningScale { get; init; } = 1.0;

    /// <summary>The fraction of the steps after which the ControlNet starts (default 0).</summary>
    public double ControlGuidanceStart { get; init; }

    /// <summary>The fraction of the steps after which the ControlNet stops (default 1).</summary>
    public double ControlGuidanceEnd { get; init; } = 1.0;
}

/// <summary>
/// Text-to-image with a Flux ControlNet (diffusers' <c>FluxControlNetPipeline</c>, InstantX-kind ControlNets): the
/// control image is resized to the output size, encoded by the VAE (a posterior sample drawn with the request's
/// generator before the noise, <c>(latents − shift) · scaling</c>) and packed as the latents are; at every step the
/// ControlNet sees the packed latents and the control latents, and its residuals, times the conditioning scale inside the
/// guidance window, go into the transformer's double- and single-stream blocks.
/// </summary>
public sealed class FluxControlNetPipeline : FluxPipelineBase
{
    /// <inheritdoc />
    private protected override bool ConvertsT5PromptWithClipTokenizer => true;

    /// <summary>Wraps loaded components, which must hold a <see cref="FluxComponents.ControlNet"/>.</summary>
    /// <exception cref="ArgumentException">The components have no ControlNet, or it does not fit the transformer.</exception>
    public FluxControlNetPipeline(FluxComponents components) : base(Checked(components)) { }

    private static FluxComponents Checked(FluxComponents components)
    {
        ArgumentNullException.ThrowIfNull(components);
        if (components.ControlNet is not { } net)
            throw new ArgumentException("FluxControlNetPipeline needs components with a ControlNet: load them with FluxComponents.FromPretrained(model, options, controlnet).", nameof(components));
        FluxComponents.CheckControlNet(net, components.Transformer);
        return components;
    }

    /// <summary>Loads a diffusers Flux pipeline folder or hub repo id and a Flux ControlNet folder or hub repo id beside it.</summary>
    public static FluxControlNetPipeline FromPretrained(string model, string controlnet, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(controlnet);
        using var components = FluxComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), controlnet, cancellationToken);
        return new FluxControlNetPipeline(components); // the pipeline's own reference keeps them
    }

    private static ControlNetSettings SettingsOf(FluxControlNetRequest r) => new("control_image", r.ControlImage, null,
        r.ControlNetConditioningScale, null, r.ControlGuidanceStart, null, r.ControlGuidanceEnd, null);

    /// <summary>Generates images guided by <see cref="FluxControlNetRequest.ControlImage"/> (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public FluxOutput Generate(FluxControlNetRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        int height = request.Height ?? DefaultSize, width = request.Width ?? DefaultSize;
        CheckInputs(request, height, width);
        SettingsOf(request).Check(1, _ => (3, "[-1, 1]"));
        int batch = BatchSize(request);
        var (latentH, latentW) = LatentSize(height, width);
        long[] packedShape = [batch, (latentH / 2) * (latentW / 2), LatentChannels * 4];
        if (request.Latents is { } given && !given.shape.SequenceEqual(packedShape))
            throw new ArgumentException($"latents must be packed [{string.Join(", ", packedShape)}], got [{string.Join(", ", given.shape)}].");
        if (request.ControlImage!.Tensor is { } controlTensor && (controlTensor.shape[2] != height || controlTensor.shape[3] != width))
            throw new ArgumentException($"A control image tensor is taken as is and must be the output size {height}x{width}, got [{string.Join(", ", controlTensor.shape)}].");

        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        var controlNet = Components.ControlNet!;
        var image = request.ControlImage.Image is { } pixels ? ImageProcessor.Preprocess(pixels, height, width) : request.ControlImage.Tensor!;
        if (image.shape[0] > batch || (image.shape[0] != 1 && image.shape[0] * request.NumImagesPerPrompt != batch))
            throw new ArgumentException($"Cannot repeat {image.shape[0]} control images to a batch of {batch}: give one, or one per prompt.");
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (positive, negative) = EncodePrompts(request, batch);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        // prepare_image: one image repeats to the batch, one per prompt repeats per image; then the VAE sample (draw 1).
        image = image.repeat_interleave(image.shape[0] == 1 ? batch : request.NumImagesPerPrompt, 0);
        var dtype = positive.PromptEmbeds.dtype;
        var controlLatents = PackLatents(EncodeImage(image.to(ScalarType.Float32), request, Components.Vae.WeightDtype(), batch));

        Tensor latents = request.Latents is { } initial
            ? initial.to(dtype, device, copy: true)
            : PackLatents(RandomDraws.Randn([batch, LatentChannels, latentH, latentW], request.Generator, request.Generators, dtype, device));
        var imageIds = LatentImageIds(latentH / 2, latentW / 2, device, dtype);

        using var scheduler = CreateScheduler(request, (int)latents.shape[1]);
        scheduler.SetBeginIndex(0);
        int total = (int)scheduler.Timesteps.shape[0];
        var scales = SettingsOf(request).StepScales(1, total);
        Tensor? controlGuidance = controlNet.Config.GuidanceEmbeds
            ? full([1], request.GuidanceScale, dtype: ScalarType.Float32, device: device).expand(batch)
            : null;
        var hooks = new ControlHooks(controlNet, controlLatents, scales, imageIds, controlGuidance);
        latents = Denoise(latents, positive, negative, imageIds, GuidanceTensor(request, batch), scheduler, scheduler.Timesteps, request,
            progress, cancellationToken, hooks);
        return Decode(latents, request.OutputType, height, width, progress);
    }

    private sealed class ControlHooks(FluxControlNetModel net, Tensor controlLatents, double[][] scales, Tensor imageIds, Tensor? guidance) : DenoiseHooks
    {
        public override (IReadOnlyList<Tensor>? Blocks, IReadOnlyList<Tensor>? Singles) ControlResiduals(Tensor latents, Tensor timestep, int step,
            Tensor embeds, Tensor pooled, Tensor textIds)
        {
            // diffusers runs the ControlNet at scale 0 outside the window; its residuals are zeros then, adding nothing.
            double scale = scales[step][0];
            if (scale == 0) return (null, null);
            return net.forward(latents, controlLatents, scale, embeds, pooled, timestep, imageIds, textIds, guidance);
        }
    }
}
