using DiffusersSharp.Schedulers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion;

// The x4 upscaler: the noised low-resolution image beside the latents, its noise level as the UNet's class label.
public abstract partial class StableDiffusionPipelineBase
{
    /// <summary>The noised low-resolution image every step appends to the (scaled) latents, repeated to the UNet batch, and
    /// the noise level per UNet sample (the class labels).</summary>
    private sealed record UpscaleState(Tensor Image, Tensor NoiseLevel);

    /// <summary>The upscaler's output size: the image's, rounded down to multiples of the VAE factor (as diffusers' image
    /// processor resizes it), times that factor (0 when the image is smaller than one factor, refused by the checks).</summary>
    private (int Height, int Width) UpscaleSize(PipelineImage image)
    {
        if (image.Tensor is { } t && t.dim() != 4) return (0, 0);
        var (h, w) = image.Image is { } pixels ? (pixels.Height, pixels.Width) : ((int)image.Tensor!.shape[2], (int)image.Tensor.shape[3]);
        var (rh, rw) = ImageProcessor.GetDefaultHeightWidth(h, w);
        return (rh * VaeScaleFactor, rw * VaeScaleFactor);
    }

    /// <summary>What diffusers' StableDiffusionUpscalePipeline needs and takes, before any compute (its check_inputs and the
    /// channel check it makes after the draws, and what its index lookups would fail on).</summary>
    private void CheckUpscaleInputs(StableDiffusionUpscaleRequest r, int height, int width)
    {
        const string pipeline = StableDiffusionUpscalePipeline.PipelineClass;
        if (r.Image is not { } image) throw new ArgumentException("image is required (the low-resolution image to upscale).");
        int f = VaeScaleFactor;
        long imageBatch, imageChannels;
        if (image.Tensor is { } t)
        {
            if (t.dim() != 4 || !t.is_floating_point())
                throw new ArgumentException($"image as a tensor must be a floating [B, 3, h, w] tensor in [0, 1], got [{string.Join(", ", t.shape)}] {t.dtype}.");
            (imageBatch, imageChannels) = (t.shape[0], t.shape[1]);
        }
        else (imageBatch, imageChannels) = (1, image.Image!.Channels);
        if (height <= 0 || width <= 0)
            throw new ArgumentException($"image is too small to upscale: each side needs at least {f} pixels (the VAE factor), as the image processor rounds sides down to multiples of it.");
        var unet = Components.Unet.Config;
        long latentChannels = Components.Vae.Config.LatentChannels;
        if (latentChannels + imageChannels != unet.InChannels)
            throw new ArgumentException($"The UNet takes {unet.InChannels} input channels, but the latents ({latentChannels}) and the image ({imageChannels}) make " +
                $"{latentChannels + imageChannels}: give an RGB image (or a [B, 3, h, w] tensor) to an x4 upscaler's UNet (in_channels 7).");
        if (unet.ClassEmbeddingKind is not (null or "embedding" or "timestep"))
            throw new ArgumentException($"The upscaler gives the UNet its noise level as integer class labels; this UNet's class embedding (class_embed_type \"{unet.ClassEmbeddingKind}\") takes vectors.");
        int maxLevel = Math.Min(Components.MaxNoiseLevel, Components.LowResSchedulerConfig!.NumTrainTimesteps - 1);
        if (unet.ClassEmbeddingKind == "embedding") maxLevel = Math.Min(maxLevel, unet.NumClassEmbeds!.Value - 1);
        if (r.NoiseLevel < 0 || r.NoiseLevel > maxLevel)
            throw new ArgumentException($"noise_level must be in [0, {maxLevel}] (max_noise_level {Components.MaxNoiseLevel}, the low-resolution scheduler's " +
                $"{Components.LowResSchedulerConfig.NumTrainTimesteps} timesteps{(unet.NumClassEmbeds is { } classes && unet.ClassEmbedType is null ? $", the UNet's {classes} noise-level classes" : "")}), got {r.NoiseLevel}.");
        int batch = BatchSize(r);
        if (batch != imageBatch)
            throw new ArgumentException($"The prompt has batch size {batch} and the image {imageBatch}: give one image per prompt (diffusers' check).");
        if (r.Generators is { Count: > 1 } generators && (generators.Count != imageBatch || r.NumImagesPerPrompt != 1))
            throw new ArgumentException($"{generators.Count} generators: {pipeline} draws the image noise ({imageBatch} images) and the latents " +
                $"({batch * r.NumImagesPerPrompt}) from them, so a list needs one generator per image and num_images_per_prompt 1 (as diffusers' randn_tensor); give one generator otherwise.");
        long[] shape = [batch * r.NumImagesPerPrompt, latentChannels, height / f, width / f];
        if (r.Latents is { } latents && !latents.shape.SequenceEqual(shape))
            throw new ArgumentException($"latents must have shape [{string.Join(", ", shape)}] (the image's size), got [{string.Join(", ", latents.shape)}].");
        string? lacking = r.Height is not null || r.Width is not null ? "height / width (the output is the image's size times the VAE factor)"
            : r.GuidanceRescale > 0 ? "guidance_rescale"
            : r.IpAdapterImage is not null || r.IpAdapterImageEmbeds is not null || r.IpAdapterScale is not null ? "IP-Adapter inputs"
            : null;
        if (lacking is not null) throw new ArgumentException($"{pipeline} takes no {lacking} (diffusers' call has no such parameter).");
    }

    /// <summary>
    /// diffusers' steps 5 of the upscaler: noise from the call's generator(s) of the image's shape (drawn before the latents),
    /// added by the low-resolution scheduler at <c>noise_level</c>; the noised image repeated as a whole to the UNet batch
    /// (<c>torch.cat([image] * (2 under guidance) * num_images_per_prompt)</c>) and one noise level per UNet sample.
    /// </summary>
    private UpscaleState PrepareUpscale(StableDiffusionUpscaleRequest r, Tensor image, ScalarType dtype, bool cfg)
    {
        var device = Components.Device;
        image = image.to(dtype, device);
        using var lowRes = new DDPMScheduler(Components.LowResSchedulerConfig!);
        var noise = Randn(image.shape, r, dtype);
        image = lowRes.AddNoise(image, noise, r.NoiseLevel);
        int copies = (cfg ? 2 : 1) * r.NumImagesPerPrompt;
        if (copies > 1) image = image.repeat(copies, 1, 1, 1);
        return new UpscaleState(image, full([image.shape[0]], (long)r.NoiseLevel, ScalarType.Int64, device));
    }
}
