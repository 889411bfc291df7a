using DiffusersSharp.Models;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion;

// InstructPix2Pix: the image's latents beside the noisy latents, and guidance over three passes.
public abstract partial class StableDiffusionPipelineBase
{
    /// <summary>The image latents every step appends (tripled under guidance: image, image, zeros), the image guidance
    /// scale, and whether guidance runs (fixed for the call, as diffusers' property reads both scales).</summary>
    private sealed record InstructPix2PixState(Tensor ImageLatents, double ImageGuidance, bool Cfg);

    /// <summary>diffusers' <c>do_classifier_free_guidance</c> of InstructPix2Pix: guidance above 1 and image guidance at least 1.</summary>
    private static bool InstructPix2PixCfg(StableDiffusionInstructPix2PixRequest r, double guidance) => guidance > 1 && r.ImageGuidanceScale >= 1;

    /// <summary>What diffusers' InstructPix2Pix call takes and the UNet needs, before any compute.</summary>
    private void CheckInstructPix2PixInputs(StableDiffusionInstructPix2PixRequest r)
    {
        if (r.Image is null) throw new ArgumentException("image is required (the image to edit).");
        if (!double.IsFinite(r.ImageGuidanceScale)) throw new ArgumentException($"image_guidance_scale must be a finite number, got {r.ImageGuidanceScale}.");
        long unetChannels = Components.Unet.Config.InChannels, latentChannels = Components.Vae.Config.LatentChannels;
        if (unetChannels != 2 * latentChannels)
            throw new ArgumentException($"InstructPix2Pix needs a UNet that takes the latents and the image's latents ({2 * latentChannels} channels); this one takes {unetChannels}: load an InstructPix2Pix model (e.g. timbrooks/instruct-pix2pix).");
        string? lacking = r.Height is not null || r.Width is not null ? "height / width (the image's size is the output's)"
            : r.ClipSkip is not null ? "clip_skip" : r.GuidanceRescale > 0 ? "guidance_rescale"
            : r.IpAdapterImage is not null || r.IpAdapterImageEmbeds is not null ? "IP-Adapter inputs (not supported here yet)" : null;
        if (lacking is not null) throw new ArgumentException($"InstructPix2Pix takes no {lacking} (diffusers' StableDiffusionInstructPix2PixPipeline).");
    }

    /// <summary>
    /// diffusers' <c>prepare_image_latents</c>: the image's posterior mode (no draw, no scaling factor; a latent tensor as
    /// is), repeated to the batch, and under guidance followed by itself and zeros (the image-free pass).
    /// </summary>
    private Tensor InstructPix2PixImageLatents(Tensor image, ScalarType dtype, int batch, bool cfg)
    {
        var vae = Components.Vae;
        Tensor latents;
        if (image.shape[1] == vae.Config.LatentChannels) latents = image.to(dtype, Components.Device);
        else
        {
            Components.Activate("vae");
            using var posterior = vae.Encode(image.to(vae.WeightDtype(), Components.Device));
            latents = posterior.Mode().to(dtype);
        }
        latents = RepeatToBatch(latents, batch);
        return cfg ? cat([latents, latents, zeros_like(latents)], 0) : latents;
    }

    /// <summary>InstructPix2Pix guidance over the three passes (instruction and image, image alone, neither).</summary>
    private static Tensor InstructPix2PixGuidance(Tensor noisePred, double guidance, double imageGuidance)
    {
        var parts = noisePred.chunk(3);
        var (text, image, uncond) = (parts[0], parts[1], parts[2]);
        return uncond + guidance * (text - image) + imageGuidance * (image - uncond);
    }
}
