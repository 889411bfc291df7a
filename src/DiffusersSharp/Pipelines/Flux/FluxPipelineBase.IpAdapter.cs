using DiffusersSharp.Images;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux;

/// <summary>The IP-Adapter image embeddings of one call, per adapter: the positive pass's and true CFG's negative pass's
/// (null: none, or not needed).</summary>
internal sealed record FluxIpAdapterEmbeds(Tensor[] Positive, Tensor[]? Negative);

// IP-Adapter inputs (diffusers' FluxPipeline.__call__ with FluxIPAdapterMixin): checks, the zero-image default of a missing
// side, prepare_ip_adapter_image_embeds / encode_image, and the per-call scale.
public abstract partial class FluxPipelineBase
{
    /// <summary>
    /// The IP-Adapter inputs' checks, before any compute. <paramref name="supported"/> false refuses them (pipelines whose
    /// IP-Adapter path is not implemented here).
    /// </summary>
    private protected void CheckIpAdapterInputs(FluxRequest r, bool supported = true)
    {
        if (!r.HasIpAdapterInput) return;
        if (!supported)
            throw new ArgumentException($"{GetType().Name} takes no IP-Adapter inputs (diffusers' has none); FluxPipeline, FluxImg2ImgPipeline, FluxInpaintPipeline, FluxControlNetPipeline, FluxKontextPipeline and FluxKontextInpaintPipeline take them.");
        bool positive = r.IpAdapterImage is not null || r.IpAdapterImageEmbeds is not null;
        bool negative = r.NegativeIpAdapterImage is not null || r.NegativeIpAdapterImageEmbeds is not null;
        if (!positive && !negative) throw new ArgumentException("ip_adapter_scale needs ip_adapter_image or ip_adapter_image_embeds.");
        var transformer = Components.Transformer;
        var projection = transformer.EncoderHidProj
            ?? throw new ArgumentException("No IP-Adapter is loaded: load one (Components.LoadIpAdapter) before passing ip_adapter_image(_embeds).");
        if (r.IpAdapterScale is { } scale && !double.IsFinite(scale)) throw new ArgumentException($"ip_adapter_scale must be a finite number, got {scale}.");
        if (r.IpAdapterImage is not null && r.IpAdapterImageEmbeds is not null)
            throw new ArgumentException("Provide either ip_adapter_image or ip_adapter_image_embeds, not both.");
        if (r.NegativeIpAdapterImage is not null && r.NegativeIpAdapterImageEmbeds is not null)
            throw new ArgumentException("Provide either negative_ip_adapter_image or negative_ip_adapter_image_embeds, not both.");
        CheckSide(r.IpAdapterImage, r.IpAdapterImageEmbeds, "ip_adapter_image", projection.Count);
        bool trueCfg = DoesTrueCfg(r);
        if (trueCfg) CheckSide(r.NegativeIpAdapterImage, r.NegativeIpAdapterImageEmbeds, "negative_ip_adapter_image", projection.Count);
        if (Components.ImageEncoder is null)
        {
            if (!positive)
                throw new ArgumentException("negative_ip_adapter_image(_embeds) without ip_adapter_image(_embeds): diffusers then encodes an all-black image for the positive side, which needs an image encoder; pass ip_adapter_image_embeds too, or load the IP-Adapter with its image encoder.");
            if (trueCfg && !negative)
                throw new ArgumentException("True CFG with an IP-Adapter needs the negative side: diffusers encodes an all-black image when negative_ip_adapter_image(_embeds) is missing, which needs an image encoder; pass negative_ip_adapter_image_embeds, or load the IP-Adapter with its image encoder.");
        }
    }

    /// <summary>Checks one side's images or embeddings (null: nothing given).</summary>
    private void CheckSide(IReadOnlyList<PipelineImage>? images, IReadOnlyList<Tensor>? embeds, string name, int adapters)
    {
        if (images is null && embeds is null) return;
        int count = images?.Count ?? embeds!.Count;
        if (count != adapters)
            throw new ArgumentException($"`{name}` must have one entry per IP-Adapter: got {count} for {adapters} IP-Adapters.");
        if (embeds is not null)
        {
            Components.Transformer.EncoderHidProj!.CheckInputs(embeds);
            foreach (var e in embeds)
                if (e.shape[0] < 1 || e.shape[1] < 1 || !e.is_floating_point())
                    throw new ArgumentException($"`{name}_embeds` tensors must be floating-point [b, images, D] with b, images >= 1, got [{string.Join(", ", e.shape)}] {e.dtype}.");
            return;
        }
        var encoder = Components.ImageEncoder
            ?? throw new ArgumentException($"`{name}` needs an image encoder, and these components have none: load the IP-Adapter with its image encoder, or pass `{name}_embeds`.");
        int width = (int)encoder.Config.ProjectionDim;
        for (int i = 0; i < images!.Count; i++)
        {
            if (Components.Transformer.EncoderHidProj![i] is Models.IPAdapters.ImageProjection p && p.ImageEmbedDim != width)
                throw new ArgumentException($"IP-Adapter {i} takes image embeddings of width {p.ImageEmbedDim}, the image encoder gives {width}.");
            var image = images[i] ?? throw new ArgumentException($"`{name}` has a null entry.");
            int size = encoder.Config.ImageSize;
            if (image.Tensor is { } t && (t.dim() != 4 || t.shape[0] < 1 || t.shape[1] != encoder.Config.NumChannels || t.shape[2] != size || t.shape[3] != size))
                throw new ArgumentException($"A `{name}` tensor is taken as the image encoder's pixel values: [N, {encoder.Config.NumChannels}, {size}, {size}], got [{string.Join(", ", t.shape)}].");
        }
    }

    /// <summary>
    /// diffusers' IP-Adapter preparation in <c>__call__</c>: a missing side (when the other is given) becomes an all-black
    /// image per adapter, then each side's <c>prepare_ip_adapter_image_embeds</c> with <paramref name="batch"/> = prompts x
    /// images per prompt copies. The negative side is only computed under true CFG (diffusers computes it always and uses it
    /// only there). Null without IP-Adapter inputs.
    /// </summary>
    private protected FluxIpAdapterEmbeds? PrepareIpAdapterEmbeds(FluxRequest r, int batch)
    {
        bool positive = r.IpAdapterImage is not null || r.IpAdapterImageEmbeds is not null;
        bool negative = r.NegativeIpAdapterImage is not null || r.NegativeIpAdapterImageEmbeds is not null;
        if (!positive && !negative) return null;
        int adapters = Components.Transformer.EncoderHidProj!.Count;
        var pos = positive ? PrepareSide(r.IpAdapterImage, r.IpAdapterImageEmbeds, batch) : PrepareSide(BlackImages(adapters), null, batch);
        Tensor[]? neg = null;
        if (DoesTrueCfg(r))
            neg = negative ? PrepareSide(r.NegativeIpAdapterImage, r.NegativeIpAdapterImageEmbeds, batch) : PrepareSide(BlackImages(adapters), null, batch);
        return new FluxIpAdapterEmbeds(pos, neg);
    }

    /// <summary>
    /// The all-black image diffusers substitutes for a missing side (<c>np.zeros((width, height, 3))</c>), one per adapter.
    /// Resizing and cropping keep it black, so it is made at the feature extractor's crop size directly.
    /// </summary>
    private List<PipelineImage> BlackImages(int adapters)
    {
        int side = Components.FeatureExtractor!.CropSize;
        return Enumerable.Range(0, adapters).Select(_ => (PipelineImage)new ImageBuffer(side, side, 3)).ToList();
    }

    /// <summary>diffusers' <c>prepare_ip_adapter_image_embeds</c>: embeddings as given, or <c>encode_image(image)[None, :]</c>
    /// ([1, N, D]); then <c>cat([e] * batch)</c> on the transformer's device.</summary>
    private Tensor[] PrepareSide(IReadOnlyList<PipelineImage>? images, IReadOnlyList<Tensor>? embeds, int batch)
    {
        var device = Components.Device;
        int count = embeds?.Count ?? images!.Count;
        var result = new Tensor[count];
        for (int i = 0; i < count; i++)
        {
            var single = embeds is not null ? embeds[i] : EncodeIpAdapterImage(images![i]).unsqueeze(0);
            single = single.to(device);
            result[i] = batch == 1 ? single : cat(Enumerable.Repeat(single, batch).ToArray(), 0);
        }
        return result;
    }

    /// <summary>diffusers' Flux <c>encode_image</c>: the feature extractor (a tensor is taken as pixel values) and the image
    /// encoder's <c>image_embeds</c> [N, D].</summary>
    private Tensor EncodeIpAdapterImage(PipelineImage image)
    {
        var encoder = Components.ImageEncoder!;
        Components.Activate("image_encoder");
        using var scope = NewDisposeScope();
        var pixels = (image.Image is { } buffer ? Components.FeatureExtractor!.Preprocess([buffer]) : image.Tensor!).to(encoder.Dtype, encoder.Device);
        using var output = encoder.Forward(pixels);
        return output.ImageEmbeds.alias().MoveToOuterDisposeScope();
    }

    /// <summary>Sets the request's IP-Adapter scale for one call; disposing restores the previous (per-block) scales.</summary>
    private protected IDisposable? IpAdapterScaleFor(FluxRequest r)
    {
        if (r.IpAdapterScale is not { } scale) return null;
        var transformer = Components.Transformer;
        var previous = transformer.IpAdapterScales; // [block][adapter]
        int adapters = previous[0].Count;
        var perAdapter = Enumerable.Range(0, adapters).Select(a => (IReadOnlyList<double>)previous.Select(b => b[a]).ToArray()).ToArray();
        transformer.SetIpAdapterScale(scale);
        return new ScaleRestore(() => transformer.SetIpAdapterScale(perAdapter));
    }

    private sealed class ScaleRestore(Action restore) : IDisposable
    {
        public void Dispose() => restore();
    }
}
