using DiffusersSharp.Models;
using DiffusersSharp.Images;
using DiffusersSharp.Pipelines.Flux;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.QwenImage;

/// <summary>
/// Inpainting with Qwen-Image (diffusers' <c>QwenImageInpaintPipeline</c>): image-to-image where, after every step, the
/// packed latents outside the mask (black) are reset to the image's latents noised to the next timestep (the clean image
/// latents after the last step), so only the white part is repainted. The mask is resized to the latent size (nearest),
/// repeated over the latent channels and packed like the latents. As in diffusers the masked image is VAE-encoded with a
/// draw from the generator and never read: only that draw is made here, so a seed gives diffusers' image. With
/// <see cref="QwenImageInpaintRequest.PaddingMaskCrop"/> the region around the mask is inpainted and pasted back.
/// </summary>
public sealed class QwenImageInpaintPipeline : QwenImagePipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    public QwenImageInpaintPipeline(QwenImageComponents components) : base(components)
    {
        // diffusers' mask_processor: grayscale, binarized at 0.5, not normalized.
        MaskProcessor = VaeImageProcessor.CreateMaskProcessor(components.Vae.VaeScaleFactor * 2, components.Vae.Config.ZDim);
    }

    /// <summary>The inpainting mask processor (diffusers' <c>mask_processor</c>).</summary>
    public VaeImageProcessor MaskProcessor { get; }

    /// <summary>Loads a diffusers Qwen-Image pipeline folder or hub repo id (<see cref="QwenImageComponents.FromPretrained"/>).</summary>
    public static QwenImageInpaintPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = QwenImageComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new QwenImageInpaintPipeline(components);
    }

    /// <summary>An inpainting pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static QwenImageInpaintPipeline FromPipe(QwenImagePipelineBase other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return new QwenImageInpaintPipeline(other.Components);
    }

    /// <summary>Repaints <see cref="QwenImageImg2ImgRequest.Image"/> where <see cref="QwenImageInpaintRequest.MaskImage"/> is white (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public QwenImageOutput Generate(QwenImageInpaintRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        if (request.Image is null) throw new ArgumentException("image is required for inpainting.");
        if (request.MaskImage is null) throw new ArgumentException("mask_image is required for inpainting.");
        if (request.Latents is not null)
            throw new ArgumentException("latents do not apply to Qwen-Image inpainting (diffusers' QwenImageInpaintPipeline returns them from prepare_latents where it unpacks three tensors, and fails).");
        if (request.MaskImage.Tensor is { } m && (m.dim() != 4 || m.shape[1] != 1))
            throw new ArgumentException($"mask_image must be an 8-bit image or a [N, 1, H, W] tensor in [0, 1], got a tensor [{string.Join(", ", m.shape)}].");
        int height = request.Height ?? DefaultSize, width = request.Width ?? DefaultSize;
        int start = CheckImageRequest(request, height, width);
        int batch = PromptCount(request) * request.NumImagesPerPrompt;
        var maskCrop = MaskCrop.For(request.PaddingMaskCrop, request.Image, request.MaskImage, request.OutputType, height, width);

        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var image = request.Image.Preprocess(ImageProcessor, height, width, maskCrop).to(ScalarType.Float32);
        var maskCondition = request.MaskImage.Preprocess(MaskProcessor, height, width, maskCrop).to(ScalarType.Float32);
        foreach (var (tensor, name) in new[] { (image, "image"), (maskCondition, "mask_image") })
            Strength.CheckRepeatsToBatch(tensor.shape[0], batch, name);

        var device = Components.Device;
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (positive, negative) = EncodePrompts(request, cancellationToken);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        var (latentH, latentW) = LatentSize(height, width);
        using var scheduler = CreateScheduler(request, (latentH / 2) * (latentW / 2));
        scheduler.SetBeginIndex(start); // get_timesteps
        var timesteps = scheduler.Timesteps[start..];
        var dtype = positive.Embeds.dtype;
        var vae = Components.Vae;
        int channels = vae.Config.ZDim;

        // prepare_latents: the image's posterior sample (normalised), then the noise.
        var imageLatents = EncodeImageLatents(image, request, dtype, batch);
        var drawn = RandomDraws.Randn([batch, 1, channels, latentH, latentW], request.Generator, request.Generators, dtype, device).squeeze(1);
        var latents = FluxPipelineBase.PackLatents(scheduler.ScaleNoise(imageLatents, timesteps[..1].repeat(batch), drawn));
        var noise = FluxPipelineBase.PackLatents(drawn);
        var packedImage = FluxPipelineBase.PackLatents(imageLatents);

        // prepare_mask_latents: the mask at latent size (nearest), over every channel, packed like the latents; diffusers
        // then encodes image * (mask < 0.5) with a draw from the generator and never reads it: only the draw is made.
        var mask = nn.functional.interpolate(maskCondition, [latentH, latentW]).to(dtype, device);
        if (mask.shape[0] < batch) mask = mask.repeat(batch / mask.shape[0], 1, 1, 1);
        mask = FluxPipelineBase.PackLatents(mask.repeat(1, channels, 1, 1));
        long maskedBatch = Math.Max(image.shape[0], maskCondition.shape[0]);
        RandomDraws.SkipVaeSample([maskedBatch, channels, 1, height / VaeScaleFactor, width / VaeScaleFactor], request.Generator, request.Generators,
            vae.WeightDtype(), device);

        Tensor Blend(Tensor stepped, int step)
        {
            var proper = packedImage;
            // scale_noise takes the sigma at the scheduler's step index, which the step just advanced to the next timestep.
            if (step < timesteps.shape[0] - 1) proper = scheduler.ScaleNoise(packedImage, timesteps[(step + 1)..(step + 2)], noise);
            return (1 - mask) * proper + mask * stepped;
        }
        latents = Denoise(latents, positive, negative, scheduler, timesteps, (1, latentH / 2, latentW / 2), request, progress, cancellationToken, Blend);
        var output = Decode(latents, request.OutputType, height, width, progress);
        if (maskCrop is null) return output;
        // padding_mask_crop: each result pasted back onto the original image where the mask is white.
        using (output) return new QwenImageOutput(maskCrop.Overlay(ImageProcessor, output.Images!), null);
    }
}
