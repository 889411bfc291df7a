using DiffusersSharp.Images;
using DiffusersSharp.Models;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion;

// The VAE side: image latents, decoding, previews, and the float32 upcast of float16 SDXL VAEs.
public abstract partial class StableDiffusionPipelineBase
{
    /// <summary>diffusers' <c>_encode_vae_image</c> / img2img encode: a posterior sample, scaled, tiled to the batch. A tensor
    /// with the latent channel count is taken as latents. SDXL image-to-image (plain, ControlNet, ControlNet-Union) normalizes
    /// with the VAE's latents_mean / latents_std when the config has both, <c>(x - mean) * scaling_factor / std</c>
    /// (Playground v2.5); the inpainting pipelines' <c>_encode_vae_image</c> scale by scaling_factor alone, as diffusers does.</summary>
    private Tensor ImageLatents(Tensor image, StableDiffusionRequest r, ScalarType dtype, int batch)
    {
        var vae = Components.Vae;
        Tensor latents;
        if (image.shape[1] == vae.Config.LatentChannels) latents = image.to(dtype, Components.Device);
        else
        {
            Components.Activate("vae");
            var sample = WithVaeUpcast(() => RandomDraws.SampleVae(vae, image, r.Generator, r.Generators, Components.Device)).to(dtype);
            if (IsXL && r is not StableDiffusionInpaintRequest && vae.Config.LatentsMean is { } mean && vae.Config.LatentsStd is { } std)
            {
                var m = tensor(mean.Select(v => (float)v).ToArray(), [1, mean.Length, 1, 1], device: Components.Device).to(dtype);
                var s = tensor(std.Select(v => (float)v).ToArray(), [1, std.Length, 1, 1], device: Components.Device).to(dtype);
                latents = (sample - m) * vae.Config.ScalingFactor / s;
            }
            else latents = vae.Config.ScalingFactor * sample;
        }
        return RepeatToBatch(latents, batch);
    }

    /// <summary>Image latents repeated to <paramref name="batch"/> (whole copies of the image batch, as diffusers concatenates them).</summary>
    private static Tensor RepeatToBatch(Tensor latents, int batch)
    {
        if (batch > latents.shape[0] && batch % latents.shape[0] == 0) return latents.repeat((int)(batch / latents.shape[0]), 1, 1, 1);
        if (batch > latents.shape[0])
            throw new ArgumentException($"Cannot duplicate an image batch of {latents.shape[0]} to {batch} images.");
        return latents;
    }

    /// <summary>
    /// Decodes intermediate latents (e.g. <see cref="StepEndContext.Latents"/> in a step callback) to images, as a preview
    /// of the generation so far. Under model offload the VAE comes to the device for it and the UNet goes back after.
    /// </summary>
    public IReadOnlyList<ImageBuffer> PreviewImages(Tensor latents) =>
        DecodePreview(latents, () => WithVaeUpcast(() => DecodeOnDevice(latents, OutputType.Image)).Images!);

    /// <summary>Decodes latents to the requested output (diffusers' postprocess); under model offload the last model goes back to the CPU.
    /// <paramref name="plainUnscale"/>: as diffusers' T2I-Adapter and SDXL ControlNet inpainting pipelines decode (see
    /// <see cref="DecodeOnDevice"/>).</summary>
    private StableDiffusionPipelineOutput Decode(Tensor latents, OutputType outputType, bool plainUnscale = false)
    {
        try
        {
            if (outputType == OutputType.Latent) return new StableDiffusionPipelineOutput(null, latents.alias().DetachFromDisposeScope());
            Components.Activate("vae");
            return WithVaeUpcast(() => DecodeOnDevice(latents, outputType, plainUnscale));
        }
        finally
        {
            Components.OffloadAll();
        }
    }

    /// <summary>
    /// Runs <paramref name="use"/> with the VAE in float32 when it is float16 with <c>force_upcast</c> (SDXL's VAE overflows
    /// in float16: diffusers' <c>upcast_vae</c> for SDXL encode and decode, and the x4 upscaler's decode), and puts it back to
    /// float16 after.
    /// </summary>
    private T WithVaeUpcast<T>(Func<T> use)
    {
        var vae = Components.Vae;
        if (!(IsXL || Components.IsUpscaler) || !vae.Config.ForceUpcast || vae.WeightDtype() != ScalarType.Float16) return use();
        return ModuleMover.RunIn(vae, ScalarType.Float32, use);
    }

    /// <summary>
    /// The VAE decode and postprocessing. SDXL unscales with the VAE's latents_mean / latents_std when the config has both,
    /// <c>x * std / scaling_factor + mean</c> (Playground v2.5), else divides by scaling_factor. <paramref name="plainUnscale"/>:
    /// the pipelines whose diffusers twins never read latents_mean / latents_std (T2I-Adapter; SDXL ControlNet and
    /// ControlNet-Union inpainting): SD 1.x / 2.x's deprecated <c>decode_latents</c> multiplies by <c>1 / scaling_factor</c>,
    /// SDXL's divides by it.
    /// </summary>
    private StableDiffusionPipelineOutput DecodeOnDevice(Tensor latents, OutputType outputType, bool plainUnscale = false)
    {
        using var scope = NewDisposeScope();
        var vae = Components.Vae;
        // diffusers casts to the VAE's dtype before unscaling (float32 when the VAE was upcast).
        latents = latents.to(vae.WeightDtype());
        Tensor scaled;
        if (plainUnscale)
            scaled = IsXL ? latents / vae.Config.ScalingFactor : latents * (1.0 / vae.Config.ScalingFactor);
        else if (IsXL && vae.Config.LatentsMean is { } mean && vae.Config.LatentsStd is { } std)
        {
            var m = tensor(mean.Select(v => (float)v).ToArray(), [1, mean.Length, 1, 1], device: latents.device).to(latents.dtype);
            var sd = tensor(std.Select(v => (float)v).ToArray(), [1, std.Length, 1, 1], device: latents.device).to(latents.dtype);
            scaled = latents * sd / vae.Config.ScalingFactor + m;
        }
        // The x4 upscaler's scaling factor is 0.08333 whatever its VAE config says (diffusers' constructor sets it).
        else scaled = latents / (Components.IsUpscaler ? StableDiffusionUpscalePipeline.ScalingFactor : vae.Config.ScalingFactor);
        var decoded = vae.Decode(scaled);
        var (images, output) = DecodedOutput.From(decoded, outputType, ImageProcessor);
        return new StableDiffusionPipelineOutput(images, output);
    }
}
