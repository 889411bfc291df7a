using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.IPAdapters;

/// <summary>
/// diffusers' <c>ImageProjection</c>, the image projection of the plain IP-Adapter: one Linear from the CLIP image
/// embedding to <c>num_image_text_embeds</c> tokens of the UNet's cross-attention width, then a LayerNorm (eps 1e-5) over
/// each token. The IP-Adapter file stores <c>image_embeds</c> as <c>image_proj.proj</c> (diffusers renames it on load).
/// </summary>
public sealed class ImageProjection : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear image_embeds;
    private readonly LayerNorm norm;
#pragma warning restore IDE1006

    /// <summary>Builds the projection.</summary>
    /// <param name="imageEmbedDim">Width of the CLIP image embedding (the image encoder's projection_dim).</param>
    /// <param name="crossAttentionDim">Width of one token (the UNet's cross_attention_dim).</param>
    /// <param name="numImageTextEmbeds">Tokens per image (4 in every plain IP-Adapter file).</param>
    /// <param name="device">Device of the parameters.</param>
    /// <param name="dtype">Dtype of the parameters.</param>
    public ImageProjection(long imageEmbedDim = 768, long crossAttentionDim = 768, int numImageTextEmbeds = 32, Device? device = null, ScalarType? dtype = null)
        : base(nameof(ImageProjection))
    {
        NumTokens = numImageTextEmbeds;
        image_embeds = new Linear(imageEmbedDim, numImageTextEmbeds * crossAttentionDim, hasBias: true, device: device, dtype: dtype);
        norm = nn.LayerNorm(crossAttentionDim, 1e-5, elementwise_affine: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Tokens produced per image.</summary>
    public int NumTokens { get; }

    /// <summary>Width of the image embedding it takes ([N, width]).</summary>
    public long ImageEmbedDim => image_embeds.weight!.shape[1];

    /// <summary>Projects image embeddings [N, imageEmbedDim] to tokens [N, NumTokens, crossAttentionDim].</summary>
    public override Tensor forward(Tensor imageEmbeds)
    {
        using var scope = NewDisposeScope();
        long batch = imageEmbeds.shape[0];
        var tokens = image_embeds.forward(imageEmbeds.to(image_embeds.weight!.dtype));
        tokens = tokens.reshape(batch, NumTokens, -1);
        return norm.forward(tokens).MoveToOuterDisposeScope();
    }
}
