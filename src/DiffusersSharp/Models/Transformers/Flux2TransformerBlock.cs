using DiffusersSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// One double-stream FLUX.2 block (diffusers <c>Flux2TransformerBlock</c>): image and text streams, each with
/// weight-free LayerNorms (<c>norm1</c>, <c>norm2</c>, <c>norm1_context</c>, <c>norm2_context</c>: no checkpoint keys)
/// modulated by the model's shared <see cref="Flux2Modulation"/> outputs, a joint <see cref="Flux2Attention"/> (text
/// first) and a SwiGLU <see cref="Flux2FeedForward"/> per stream (<c>ff</c>, <c>ff_context</c>), with gated residuals.
/// In float16 the text stream is clipped to ±65504 at the end, as diffusers does.
/// </summary>
public sealed class Flux2TransformerBlock : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Flux2Attention attn;
    private readonly Flux2FeedForward ff;
    private readonly Flux2FeedForward ff_context;
#pragma warning restore IDE1006
    private readonly double _eps;

    /// <summary>Creates a block of width <paramref name="dim"/> = heads × head width with a feed-forward of <c>int(dim × mlpRatio)</c>.</summary>
    public Flux2TransformerBlock(long dim, int numAttentionHeads, int attentionHeadDim, double mlpRatio = 3.0, double eps = 1e-6, bool bias = false,
        Device? device = null, ScalarType? dtype = null) : base(nameof(Flux2TransformerBlock))
    {
        _eps = eps;
        attn = new Flux2Attention(dim, numAttentionHeads, attentionHeadDim, addedKvProjDim: dim, bias: bias, addedProjBias: bias, outBias: bias,
            eps: eps, device: device, dtype: dtype);
        ff = new Flux2FeedForward(dim, dim, mlpRatio, bias: bias, device: device, dtype: dtype);
        ff_context = new Flux2FeedForward(dim, dim, mlpRatio, bias: bias, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Runs the block on image tokens <paramref name="x"/> [B, N, D] and text tokens <paramref name="context"/> [B, S, D]
    /// with the raw modulations <paramref name="tembModImg"/> and <paramref name="tembModTxt"/> ([B, 6·D]: two sets of
    /// shift, scale, gate, for the attention then the feed-forward) and the joint rotary table (text rows first).
    /// Returns the new text and image tokens.
    /// </summary>
    public (Tensor Context, Tensor X) forward(Tensor x, Tensor context, Tensor tembModImg, Tensor tembModTxt, (Tensor Cos, Tensor Sin) rotary) =>
        forward(x, context, tembModImg, tembModTxt, rotary, null);

    /// <summary>
    /// The block with the KV processor when <paramref name="kv"/> is given; <paramref name="tembModImg"/> may then be
    /// per token ([B, N, 6·D]: the reference tokens' rows modulated at the fixed reference timestep).
    /// </summary>
    internal (Tensor Context, Tensor X) forward(Tensor x, Tensor context, Tensor tembModImg, Tensor tembModTxt, (Tensor Cos, Tensor Sin) rotary,
        Flux2KVAttentionArgs? kv)
    {
        var img = Flux2Modulation.Split(tembModImg, 2);
        var txt = Flux2Modulation.Split(tembModTxt, 2);

        Tensor attnOut, contextAttnOut;
        using (var scope = NewDisposeScope())
        {
            var normX = Flux2Modulation.Modulate(x, _eps, img[0].Shift, img[0].Scale);
            var normContext = Flux2Modulation.Modulate(context, _eps, txt[0].Shift, txt[0].Scale);
            var (a, c) = attn.forward(normX, normContext, rotary, kv);
            attnOut = a.MoveToOuterDisposeScope();
            contextAttnOut = c!.MoveToOuterDisposeScope();
        }

        x = attnOut.Consume(a => Flux2Modulation.GatedResidual(x, img[0].Gate, a));
        x = x.Consume(h => Feed(h, ff, img[1]));

        context = contextAttnOut.Consume(c => Flux2Modulation.GatedResidual(context, txt[0].Gate, c));
        context = context.Consume(h => Feed(h, ff_context, txt[1]));
        if (context.dtype == ScalarType.Float16) context = context.Consume(c => c.clip(-65504, 65504));
        return (context, x);
    }

    /// <summary><c>h + gate · ff((1 + scale) · norm2(h) + shift)</c>; frees <paramref name="h"/>'s intermediates.</summary>
    private Tensor Feed(Tensor h, Flux2FeedForward feedForward, (Tensor Shift, Tensor Scale, Tensor Gate) mod)
    {
        using var scope = NewDisposeScope();
        var normed = Flux2Modulation.Modulate(h, _eps, mod.Shift, mod.Scale);
        var output = normed.Consume(feedForward.forward);
        return Flux2Modulation.GatedResidual(h, mod.Gate, output).MoveToOuterDisposeScope();
    }
}
