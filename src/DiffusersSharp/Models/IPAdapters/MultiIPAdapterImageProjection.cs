using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.IPAdapters;

/// <summary>
/// diffusers' <c>MultiIPAdapterImageProjection</c> (the UNet's <c>encoder_hid_proj</c> once an IP-Adapter is loaded): one
/// image projection per IP-Adapter. Each adapter's embeddings [B, images, D] (or [B, images, S, D] for projections that
/// take hidden states) are projected image by image to [B, images, tokens, cross_attention_dim].
/// </summary>
public sealed class MultiIPAdapterImageProjection : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly ModuleList<nn.Module<Tensor, Tensor>> image_projection_layers;
#pragma warning restore IDE1006

    /// <summary>Wraps <paramref name="layers"/> (one per IP-Adapter, in load order).</summary>
    public MultiIPAdapterImageProjection(IEnumerable<nn.Module<Tensor, Tensor>> layers) : base(nameof(MultiIPAdapterImageProjection))
    {
        image_projection_layers = new ModuleList<nn.Module<Tensor, Tensor>>(layers.ToArray());
        RegisterComponents();
    }

    /// <summary>Number of IP-Adapters.</summary>
    public int Count => image_projection_layers.Count;

    /// <summary>The projection of adapter <paramref name="index"/>.</summary>
    public nn.Module<Tensor, Tensor> this[int index] => image_projection_layers[index];

    /// <summary>
    /// Checks one tensor per adapter of the rank and width its projection takes: [B, images, D] for
    /// <see cref="ImageProjection"/>, [B, images, S, D] for <see cref="IPAdapterPlusImageProjection"/>.
    /// </summary>
    /// <exception cref="ArgumentException">A count, rank or width does not fit.</exception>
    public void CheckInputs(IReadOnlyList<Tensor> imageEmbeds)
    {
        ArgumentNullException.ThrowIfNull(imageEmbeds);
        if (imageEmbeds.Count != Count)
            throw new ArgumentException($"image_embeds must have one tensor per IP-Adapter ({Count}), got {imageEmbeds.Count}.", nameof(imageEmbeds));
        for (int i = 0; i < Count; i++)
        {
            var e = imageEmbeds[i] ?? throw new ArgumentException($"image_embeds of IP-Adapter {i} is null.", nameof(imageEmbeds));
            var (rank, width, what) = image_projection_layers[i] switch
            {
                ImageProjection p => (3, p.ImageEmbedDim, "[B, images, D]"),
                IPAdapterPlusImageProjection p => (4, p.EmbedDims, "[B, images, S, D]"),
                _ => (0, 0L, "?"),
            };
            if (e.dim() != rank || e.shape[^1] != width)
                throw new ArgumentException($"image_embeds of IP-Adapter {i} must be {what} with D = {width}, got [{string.Join(", ", e.shape)}].", nameof(imageEmbeds));
        }
    }

    /// <summary>Projects one embedding tensor per adapter; returns [B, images, tokens, cross_attention_dim] per adapter.</summary>
    public Tensor[] forward(IReadOnlyList<Tensor> imageEmbeds)
    {
        if (imageEmbeds.Count != Count)
            throw new ArgumentException($"image_embeds must have one tensor per IP-Adapter ({Count}), got {imageEmbeds.Count}.", nameof(imageEmbeds));
        using var scope = NewDisposeScope();
        var result = new Tensor[Count];
        for (int i = 0; i < Count; i++)
        {
            var e = imageEmbeds[i];
            long batch = e.shape[0], images = e.shape[1];
            var flat = e.reshape([batch * images, .. e.shape[2..]]);
            var projected = image_projection_layers[i].forward(flat);
            result[i] = projected.reshape([batch, images, .. projected.shape[1..]]).MoveToOuterDisposeScope();
        }
        return result;
    }
}
