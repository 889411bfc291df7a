using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion3;

// IP-Adapter inputs: checks and diffusers' SD3 prepare_ip_adapter_image_embeds / encode_image.
public abstract partial class StableDiffusion3PipelineBase
{
    /// <summary>The IP-Adapter inputs' checks (what diffusers' prepare_ip_adapter_image_embeds and its transformer call would
    /// refuse or silently mishandle), before any compute.</summary>
    private void CheckIpAdapterInputs(StableDiffusion3Request r)
    {
        if (r.IpAdapterImage is null && r.IpAdapterImageEmbeds is null)
        {
            if (r.IpAdapterScale is not null) throw new ArgumentException("ip_adapter_scale needs ip_adapter_image or ip_adapter_image_embeds.");
            return;
        }
        if (r.IpAdapterImage is not null && r.IpAdapterImageEmbeds is not null)
            throw new ArgumentException("Provide either ip_adapter_image or ip_adapter_image_embeds, not both.");
        var projection = Components.Transformer.ImageProj
            ?? throw new ArgumentException("No IP-Adapter is loaded: load one (Components.LoadIpAdapter) before passing ip_adapter_image(_embeds).");
        if (r.IpAdapterScale is { } scale && !double.IsFinite(scale)) throw new ArgumentException($"ip_adapter_scale must be a finite number, got {scale}.");
        bool cfg = r.GuidanceScale > 1;
        int images = BatchSize(r) * r.NumImagesPerPrompt;
        if (r.SkipGuidanceLayers is not null && cfg && images > 1)
            throw new ArgumentException($"Skip-layer guidance with an IP-Adapter works for one image per call only ({images} here): diffusers' skip-layer " +
                "pass gives the transformer the CFG-doubled image features beside the un-doubled latents, which fails for more than one image.");
        if (r.IpAdapterImage is { } image)
        {
            var encoder = Components.ImageEncoder
                ?? throw new ArgumentException("ip_adapter_image needs an image encoder, and these components have none: load the IP-Adapter with an image " +
                    "encoder folder (google/siglip-so400m-patch14-384 for InstantX/SD3.5-Large-IP-Adapter), or pass ip_adapter_image_embeds.");
            int size = encoder.Config.ImageSize;
            if (image.Tensor is { } t && (t.dim() != 4 || t.shape[0] != 1 || t.shape[1] != 3 || t.shape[2] != size || t.shape[3] != size))
                throw new ArgumentException($"An ip_adapter_image tensor is taken as the image encoder's pixel values: [1, 3, {size}, {size}], got [{string.Join(", ", t.shape)}].");
            if (encoder.Config.HiddenSize != projection.EmbedDim)
                throw new ArgumentException($"The image encoder's hidden size {encoder.Config.HiddenSize} is not the IP-Adapter's image feature width {projection.EmbedDim}.");
            return;
        }
        var e = r.IpAdapterImageEmbeds!;
        long rows = cfg ? 2 : 1;
        if (e.dim() != 3 || e.shape[0] != rows || e.shape[2] != projection.EmbedDim || !e.is_floating_point())
            throw new ArgumentException(cfg
                ? $"With guidance on, ip_adapter_image_embeds must be [2, S, {projection.EmbedDim}]: the negative then the positive image features of one image, got {e.dtype} [{string.Join(", ", e.shape)}]."
                : $"ip_adapter_image_embeds must be [1, S, {projection.EmbedDim}]: the image features of one image, got {e.dtype} [{string.Join(", ", e.shape)}].");
    }

    /// <summary>
    /// diffusers' SD3 <c>prepare_ip_adapter_image_embeds</c> for <paramref name="images"/> = batch x num_images_per_prompt:
    /// given features are split into negative and positive halves under CFG, an image is encoded (<c>encode_image</c>:
    /// the encoder's <c>hidden_states[-2]</c>, zeros as the negative; skipped when the scale is 0, as diffusers'
    /// <c>is_ip_adapter_active</c>); each half is repeated <paramref name="images"/> times, negative first. Null without
    /// IP-Adapter inputs.
    /// </summary>
    private Tensor? PrepareIpAdapterImageEmbeds(StableDiffusion3Request r, bool cfg, long images, Device device)
    {
        Tensor single, negative;
        if (r.IpAdapterImageEmbeds is { } given)
        {
            var embeds = given.to(device);
            (negative, single) = cfg ? (embeds.narrow(0, 0, 1), embeds.narrow(0, 1, 1)) : (embeds, embeds);
        }
        else if (r.IpAdapterImage is { } image && Components.Transformer.IpAdapterScale > 0)
        {
            var encoder = Components.ImageEncoder!;
            Components.Activate("image_encoder");
            var pixels = (image.Image is { } buffer ? Components.FeatureExtractor!.Preprocess([buffer]) : image.Tensor!).to(encoder.Dtype, encoder.Device);
            using var output = encoder.Forward(pixels, outputHiddenStates: true);
            single = output.HiddenStates[^2].to(device).alias();
            negative = zeros_like(single);
        }
        else return null;
        var repeated = single.repeat(images, 1, 1);
        return cfg ? cat([negative.repeat(images, 1, 1), repeated], 0) : repeated;
    }

    /// <summary>Sets the request's IP-Adapter scale for one call; disposing restores the previous scale.</summary>
    private IDisposable? IpAdapterScaleFor(StableDiffusion3Request r)
    {
        if (r.IpAdapterScale is not { } scale || Components.Transformer.IpAdapterScale is not { } previous) return null;
        var transformer = Components.Transformer;
        transformer.SetIpAdapterScale(scale);
        return new RestoreScale(() => transformer.SetIpAdapterScale(previous));
    }

    private sealed class RestoreScale(Action action) : IDisposable
    {
        public void Dispose() => action();
    }
}
