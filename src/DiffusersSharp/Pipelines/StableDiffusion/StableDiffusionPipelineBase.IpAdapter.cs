using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion;

// IP-Adapter inputs: checks and diffusers' prepare_ip_adapter_image_embeds.
public abstract partial class StableDiffusionPipelineBase
{
    /// <summary>The IP-Adapter inputs' checks (diffusers' check_inputs and what its UNet call would refuse), before any compute.</summary>
    private void CheckIpAdapterInputs(StableDiffusionRequest r, bool cfg)
    {
        if (r.IpAdapterImage is null && r.IpAdapterImageEmbeds is null)
        {
            if (r.IpAdapterScale is not null) throw new ArgumentException("ip_adapter_scale needs ip_adapter_image or ip_adapter_image_embeds.");
            return;
        }
        if (r.IpAdapterImage is not null && r.IpAdapterImageEmbeds is not null)
            throw new ArgumentException("Provide either ip_adapter_image or ip_adapter_image_embeds, not both.");
        var projection = Components.Unet.EncoderHidProj
            ?? throw new ArgumentException("No IP-Adapter is loaded: load one (Components.LoadIpAdapter) before passing ip_adapter_image(_embeds).");
        if (r.IpAdapterScale is { } scale && !double.IsFinite(scale)) throw new ArgumentException($"ip_adapter_scale must be a finite number, got {scale}.");
        int count = r.IpAdapterImage?.Count ?? r.IpAdapterImageEmbeds!.Count;
        if (count != projection.Count)
            throw new ArgumentException($"ip_adapter_image(_embeds) must have one entry per IP-Adapter ({projection.Count}), got {count}.");
        int batch = BatchSize(r);
        if (r.IpAdapterImage is not null)
        {
            if (Components.ImageEncoder is null)
                throw new ArgumentException("ip_adapter_image needs an image encoder, and these components have none: load the IP-Adapter with its image_encoder folder, or pass ip_adapter_image_embeds.");
            if (batch != 1)
                throw new ArgumentException($"ip_adapter_image gives the embeddings of one prompt; with {batch} prompts pass ip_adapter_image_embeds (one row per prompt).");
            var size = Components.ImageEncoder.Config.ImageSize;
            foreach (var image in r.IpAdapterImage)
                if (image?.Tensor is { } t && (t.dim() != 4 || t.shape[0] != 1 || t.shape[1] != 3 || t.shape[2] != size || t.shape[3] != size))
                    throw new ArgumentException($"An ip_adapter_image tensor is taken as the image encoder's pixel values: [1, 3, {size}, {size}], got [{string.Join(", ", t.shape)}].");
                else if (image is null) throw new ArgumentException("ip_adapter_image has a null entry.");
            return;
        }
        projection.CheckInputs(r.IpAdapterImageEmbeds!);
        foreach (var e in r.IpAdapterImageEmbeds!)
        {
            long expected = cfg ? 2L * batch : batch;
            if (e.shape[0] != expected)
                throw new ArgumentException(cfg
                    ? $"With guidance on, each ip_adapter_image_embeds tensor holds the negative then the positive embeddings: batch {expected} (2 x {batch} prompts), got {e.shape[0]}."
                    : $"Each ip_adapter_image_embeds tensor must have batch {batch} (one per prompt), got {e.shape[0]}.");
        }
    }

    /// <summary>
    /// diffusers' <c>prepare_ip_adapter_image_embeds</c> for given embeddings: under CFG each tensor is split into its
    /// negative and positive halves, each repeated num_images_per_prompt times along the batch, then joined negative
    /// first. Null without IP-Adapter inputs.
    /// </summary>
    private Tensor[]? PrepareIpAdapterImageEmbeds(StableDiffusionRequest r, bool cfg, Device device)
    {
        if (r.IpAdapterImage is { } images) return EncodeIpAdapterImages(images, r.NumImagesPerPrompt, cfg, device);
        if (r.IpAdapterImageEmbeds is not { } given) return null;
        int n = r.NumImagesPerPrompt;
        var result = new Tensor[given.Count];
        for (int i = 0; i < given.Count; i++)
        {
            var embeds = given[i].to(device);
            Tensor Repeat(Tensor x) => n == 1 ? x : cat(Enumerable.Repeat(x, n).ToArray(), 0);
            if (cfg)
            {
                var halves = embeds.chunk(2);
                result[i] = cat([Repeat(halves[0]), Repeat(halves[1])], 0);
            }
            else result[i] = Repeat(embeds);
        }
        return result;
    }

    /// <summary>
    /// diffusers' <c>encode_image</c> path of <c>prepare_ip_adapter_image_embeds</c>: each adapter's image through the
    /// feature extractor (a tensor is taken as pixel values) and the image encoder. A plain IP-Adapter takes its
    /// <c>image_embeds</c> as [1, 1, D] with zeros as the negative; the others (IP-Adapter Plus) the penultimate hidden
    /// states [1, 1, S, D], the negative being those of an all-zero image. Then num_images_per_prompt copies, negative
    /// first under CFG.
    /// </summary>
    private Tensor[] EncodeIpAdapterImages(IReadOnlyList<PipelineImage> images, int n, bool cfg, Device device)
    {
        var encoder = Components.ImageEncoder!;
        Components.Activate("image_encoder");
        var result = new Tensor[images.Count];
        for (int i = 0; i < images.Count; i++)
        {
            var pixels = (images[i].Image is { } buffer ? Components.FeatureExtractor!.Preprocess([buffer]) : images[i].Tensor!).to(encoder.Dtype, encoder.Device);
            Tensor embeds, negative;
            Tensor Repeat(Tensor x) => n == 1 ? x : cat(Enumerable.Repeat(x, n).ToArray(), 0);
            if (Components.Unet.EncoderHidProj![i] is Models.IPAdapters.ImageProjection)
            {
                using var output = encoder.Forward(pixels);
                embeds = output.ImageEmbeds.to(device).unsqueeze(0);
                negative = zeros_like(embeds);
            }
            else
            {
                using var output = encoder.Forward(pixels, outputHiddenStates: true);
                embeds = output.HiddenStates[^2].to(device).unsqueeze(0);
                using var zeroImage = zeros_like(pixels);
                using var uncond = encoder.Forward(zeroImage, outputHiddenStates: true);
                negative = uncond.HiddenStates[^2].to(device).unsqueeze(0);
            }
            result[i] = cfg ? cat([Repeat(negative), Repeat(embeds)], 0) : Repeat(embeds);
        }
        return result;
    }

    /// <summary>Sets the request's IP-Adapter scale for one call; disposing restores the previous scales.</summary>
    private IDisposable? IpAdapterScaleFor(StableDiffusionRequest r)
    {
        if (r.IpAdapterScale is not { } scale) return null;
        var unet = Components.Unet;
        var previous = unet.IpAdapterScales.ToArray();
        unet.SetIpAdapterScale(scale);
        return new Restore(() => unet.SetIpAdapterScale(previous));
    }

    private sealed class Restore(Action action) : IDisposable
    {
        public void Dispose() => action();
    }
}
