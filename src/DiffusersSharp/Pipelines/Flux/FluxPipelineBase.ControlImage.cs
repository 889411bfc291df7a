using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux;

// FLUX.1-Canny-dev / Depth-dev (diffusers' FluxControlPipeline family): the control image's packed latents are appended
// to the packed latents' channels at every step, so the transformer takes twice the channels (in_channels 128).
public abstract partial class FluxPipelineBase
{
    /// <summary>Whether the transformer takes the control image's channels beside the latents' (in_channels = 8 x the VAE's
    /// latent channels: FLUX.1-Canny-dev and Depth-dev).</summary>
    public bool TakesControlImage => Components.Transformer.Config.InChannels == 8 * Components.Vae.Config.LatentChannels;

    /// <summary>The control pipelines' checks, before any compute: a control transformer, a control image of pixels, no true
    /// CFG (diffusers' control pipelines have no negative prompt).</summary>
    private protected void CheckControlImageInputs(FluxRequest r, PipelineImage? controlImage)
    {
        if (!TakesControlImage)
            throw new ArgumentException($"The Flux control pipelines need a transformer that takes the control image's channels (in_channels {8 * Components.Vae.Config.LatentChannels}), this one has {Components.Transformer.Config.InChannels}: load FLUX.1-Canny-dev or FLUX.1-Depth-dev.");
        if (controlImage is null) throw new ArgumentException("control_image is required.");
        if (controlImage.Tensor is { } t && t.shape[1] != 3)
            throw new ArgumentException($"control_image must be an RGB image or a [B, 3, H, W] pixel tensor (diffusers VAE-encodes it), got {t.shape[1]} channels.");
        if (r.TrueCfgScale != 1.0 || r.NegativePrompt is not null || r.NegativePrompt2 is not null || r.NegativePromptEmbeds is not null)
            throw new ArgumentException("The Flux control pipelines have no true CFG or negative prompt (diffusers' FluxControlPipeline takes neither); guidance_scale is the embedded guidance.");
    }

    /// <summary>
    /// diffusers' <c>prepare_image</c> and control encode: the image resized to the output size, repeated to the batch
    /// (one image to every sample; several, each to its images per prompt), VAE-encoded with one posterior sample for the
    /// whole batch, <c>(latents − shift) · scaling</c>, packed.
    /// </summary>
    private protected Tensor ControlImageLatents(PipelineImage controlImage, FluxRequest r, int height, int width, int batch)
    {
        var image = PreprocessImage(controlImage, height, width);
        CheckImageTensor(image, batch, height, width, "control_image");
        image = image.repeat_interleave(image.shape[0] == 1 ? batch : r.NumImagesPerPrompt, 0);
        var vae = Components.Vae;
        Components.Activate("vae");
        var sample = RandomDraws.SampleVae(vae, image, r.Generator, r.Generators, Components.Device);
        return PackLatents((sample - (vae.Config.ShiftFactor ?? 0.0)) * vae.Config.ScalingFactor);
    }
}
