using DiffusersSharp.Models;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion;

// InstructPix2Pix (SD 1.x and SDXL): the image's latents beside the noisy latents, and guidance over three passes.
public abstract partial class StableDiffusionPipelineBase
{
    /// <summary>The image latents every step appends (tripled under guidance: image, image, zeros), the image guidance
    /// scale, and whether guidance runs (fixed for the call, as diffusers' property reads both scales).</summary>
    private sealed record InstructPix2PixState(Tensor ImageLatents, double ImageGuidance, bool Cfg);

    /// <summary>SDXL InstructPix2Pix with diffusers' <c>is_cosxl_edit</c> (CosXL Edit): the image latents are multiplied by
    /// the VAE's scaling factor. False for every other pipeline.</summary>
    private protected virtual bool ScalesInstructPix2PixImageLatents => false;

    /// <summary>diffusers' <c>do_classifier_free_guidance</c> of InstructPix2Pix: guidance above 1 and image guidance at least 1.</summary>
    private static bool InstructPix2PixCfg(StableDiffusionInstructPix2PixRequest r, double guidance) => guidance > 1 && r.ImageGuidanceScale >= 1;

    /// <summary>The output size of an edit: SD 1.x / 2.x the image's (rounded down to multiples of 8; the call takes no
    /// size); SDXL height / width, by default the model's (the image is resized to it).</summary>
    private (int Height, int Width) InstructPix2PixSize(StableDiffusionInstructPix2PixRequest r, PipelineImage image) =>
        IsXL ? (r.Height ?? DefaultSize, r.Width ?? DefaultSize) : SizeOf(image, null, null);

    /// <summary>What diffusers' InstructPix2Pix call takes and the UNet needs, before any compute.</summary>
    private void CheckInstructPix2PixInputs(StableDiffusionInstructPix2PixRequest r, int height, int width)
    {
        if (r.Image is null) throw new ArgumentException("image is required (the image to edit).");
        if (!double.IsFinite(r.ImageGuidanceScale)) throw new ArgumentException($"image_guidance_scale must be a finite number, got {r.ImageGuidanceScale}.");
        long unetChannels = Components.Unet.Config.InChannels, latentChannels = Components.Vae.Config.LatentChannels;
        if (unetChannels != 2 * latentChannels)
            throw new ArgumentException($"InstructPix2Pix needs a UNet that takes the latents and the image's latents ({2 * latentChannels} channels); this one takes {unetChannels}: load an InstructPix2Pix model (e.g. {(IsXL ? "diffusers/sdxl-instructpix2pix-768" : "timbrooks/instruct-pix2pix")}).");
        string pipeline = IsXL ? "StableDiffusionXLInstructPix2PixPipeline" : "StableDiffusionInstructPix2PixPipeline";
        string? lacking = !IsXL && (r.Height is not null || r.Width is not null) ? "height / width (the image's size is the output's)"
            : r.ClipSkip is not null ? "clip_skip" : !IsXL && r.GuidanceRescale > 0 ? "guidance_rescale"
            : r.IpAdapterImage is not null || r.IpAdapterImageEmbeds is not null ? "IP-Adapter inputs (not supported here yet)"
            : IsXL && (r.NegativeOriginalSize is not null || r.NegativeTargetSize is not null || r.NegativeCropsCoordsTopLeft != default)
                ? "negative size / crop micro-conditioning (the three passes share the time ids)" : null;
        if (lacking is not null) throw new ArgumentException($"InstructPix2Pix takes no {lacking} (diffusers' {pipeline}).");
        // A latent tensor is used as it is: it must be the output's size.
        if (r.Image.Tensor is { } t && t.dim() == 4 && t.shape[1] == latentChannels
            && (t.shape[2] * VaeScaleFactor != height || t.shape[3] * VaeScaleFactor != width))
            throw new ArgumentException($"image is a latent tensor of {t.shape[2]}x{t.shape[3]}, which is not the output's {height}x{width} / {VaeScaleFactor}: give height / width to match, or an image.");
    }

    /// <summary>
    /// diffusers' <c>prepare_image_latents</c>: the image's posterior mode (no draw, no scaling factor; a latent tensor as
    /// is; SDXL encodes with a float16 VAE upcast to float32 when it has <c>force_upcast</c>), repeated to the batch, and
    /// under guidance followed by itself and zeros (the image-free pass). CosXL Edit then multiplies them by the VAE's
    /// scaling factor (also a given latent tensor, as diffusers does).
    /// </summary>
    private Tensor InstructPix2PixImageLatents(Tensor image, ScalarType dtype, int batch, bool cfg)
    {
        var vae = Components.Vae;
        Tensor latents;
        if (image.shape[1] == vae.Config.LatentChannels) latents = image.to(dtype, Components.Device);
        else
        {
            Components.Activate("vae");
            latents = WithVaeUpcast(() =>
            {
                using var posterior = vae.Encode(image.to(vae.WeightDtype(), Components.Device));
                return posterior.Mode();
            }).to(dtype);
        }
        latents = RepeatToBatch(latents, batch);
        if (cfg) latents = cat([latents, latents, zeros_like(latents)], 0);
        return ScalesInstructPix2PixImageLatents ? latents * vae.Config.ScalingFactor : latents;
    }

    /// <summary>InstructPix2Pix guidance over the three passes (instruction and image, image alone, neither), then SDXL's
    /// guidance rescale toward the instruction pass.</summary>
    private static Tensor InstructPix2PixGuidance(Tensor noisePred, double guidance, double imageGuidance, double guidanceRescale)
    {
        var parts = noisePred.chunk(3);
        var (text, image, uncond) = (parts[0], parts[1], parts[2]);
        var guided = uncond + guidance * (text - image) + imageGuidance * (image - uncond);
        return guidanceRescale > 0 ? RescaleNoiseCfg(guided, text, guidanceRescale) : guided;
    }
}
