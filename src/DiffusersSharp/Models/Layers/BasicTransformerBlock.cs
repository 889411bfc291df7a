using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// diffusers' <c>BasicTransformerBlock</c> with <c>norm_type="layer_norm"</c> (the SD / SDXL UNets):
/// <c>x += attn1(norm1(x))</c> (self-attention, or attention to the text with <c>only_cross_attention</c>),
/// <c>x += attn2(norm2(x), text)</c>, <c>x += ff(norm3(x))</c> with a GEGLU feed-forward. LayerNorms are affine with
/// eps 1e-5; attention has no q/k/v bias. <c>double_self_attention</c>, ada norms and positional embeddings are not
/// implemented (the UNets never use them).
/// </summary>
public sealed class BasicTransformerBlock : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly LayerNorm norm1;
    private readonly Attention attn1;
    private readonly LayerNorm? norm2;
    private readonly Attention? attn2;
    private readonly LayerNorm norm3;
    private readonly FeedForward ff;
#pragma warning restore IDE1006
    private readonly bool _onlyCrossAttention;

    /// <summary>Builds the block.</summary>
    /// <param name="dim">Token width.</param>
    /// <param name="heads">Attention heads.</param>
    /// <param name="dimHead">Width of one head.</param>
    /// <param name="crossAttentionDim">Width of the text states, or null for a block without cross-attention.</param>
    /// <param name="onlyCrossAttention">Whether attn1 also attends to the text (diffusers' only_cross_attention).</param>
    /// <param name="activationFn">Feed-forward activation (diffusers' default geglu).</param>
    /// <param name="normEps">LayerNorm epsilon.</param>
    /// <param name="device">Device of the parameters.</param>
    /// <param name="dtype">Dtype of the parameters.</param>
    public BasicTransformerBlock(long dim, int heads, long dimHead, long? crossAttentionDim, bool onlyCrossAttention = false,
        string activationFn = "geglu", double normEps = 1e-5, Device? device = null, ScalarType? dtype = null)
        : base(nameof(BasicTransformerBlock))
    {
        if (onlyCrossAttention && crossAttentionDim is null)
            throw new ArgumentException("only_cross_attention needs a cross_attention_dim.", nameof(onlyCrossAttention));
        _onlyCrossAttention = onlyCrossAttention;
        norm1 = nn.LayerNorm(dim, normEps, elementwise_affine: true, device: device, dtype: dtype);
        attn1 = new Attention(dim, onlyCrossAttention ? crossAttentionDim : null, heads, dimHead, device: device, dtype: dtype);
        if (crossAttentionDim is not null)
        {
            norm2 = nn.LayerNorm(dim, normEps, elementwise_affine: true, device: device, dtype: dtype);
            attn2 = new Attention(dim, crossAttentionDim, heads, dimHead, device: device, dtype: dtype);
        }
        norm3 = nn.LayerNorm(dim, normEps, elementwise_affine: true, device: device, dtype: dtype);
        ff = new FeedForward(dim, activationFn: activationFn, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Applies the block without text (self-attention only).</summary>
    public override Tensor forward(Tensor hiddenStates) => forward(hiddenStates, null);

    /// <summary>Applies the block to tokens [B, N, dim] with text <paramref name="encoderHiddenStates"/> [B, S, crossAttentionDim].</summary>
    public Tensor forward(Tensor hiddenStates, Tensor? encoderHiddenStates)
    {
        using var scope = NewDisposeScope();
        var attnOutput = attn1.forward(norm1.forward(hiddenStates), _onlyCrossAttention ? encoderHiddenStates : null);
        var h = attnOutput + hiddenStates;
        if (attn2 is not null)
        {
            // diffusers: with no text the cross-attention layer attends to the tokens themselves.
            attnOutput = attn2.forward(norm2!.forward(h), encoderHiddenStates);
            h = attnOutput + h;
        }
        var ffOutput = ff.forward(norm3.forward(h));
        h = ffOutput + h;
        return h.MoveToOuterDisposeScope();
    }
}
