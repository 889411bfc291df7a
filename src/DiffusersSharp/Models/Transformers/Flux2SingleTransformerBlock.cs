using DiffusersSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// One single-stream FLUX.2 block (diffusers <c>Flux2SingleTransformerBlock</c>) on text and image tokens as one
/// sequence (text first): a weight-free LayerNorm (<c>norm</c>, no checkpoint keys) modulated by the model's shared
/// single-stream <see cref="Flux2Modulation"/> output, the parallel attention + MLP <see cref="Flux2ParallelSelfAttention"/>,
/// and a gated residual. In float16 the result is clipped to ±65504, as diffusers does.
/// </summary>
public sealed class Flux2SingleTransformerBlock : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Flux2ParallelSelfAttention attn;
#pragma warning restore IDE1006
    private readonly double _eps;

    /// <summary>Creates a block of width <paramref name="dim"/> with an MLP branch of width <c>int(dim × mlpRatio)</c>.</summary>
    public Flux2SingleTransformerBlock(long dim, int numAttentionHeads, int attentionHeadDim, double mlpRatio = 3.0, double eps = 1e-6,
        bool bias = false, Device? device = null, ScalarType? dtype = null) : base(nameof(Flux2SingleTransformerBlock))
    {
        _eps = eps;
        attn = new Flux2ParallelSelfAttention(dim, numAttentionHeads, attentionHeadDim, bias: bias, outBias: bias, eps: eps,
            mlpRatio: mlpRatio, mlpMultFactor: 2, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Runs the block on <paramref name="hidden"/> [B, S + N, D] (text tokens, then image tokens) with the raw modulation
    /// <paramref name="tembMod"/> ([B, 3·D]: shift, scale, gate) and the joint rotary table. Returns the new tokens.
    /// </summary>
    public Tensor forward(Tensor hidden, Tensor tembMod, (Tensor Cos, Tensor Sin) rotary) => forward(hidden, tembMod, rotary, null);

    /// <summary>
    /// The block with the KV processor when <paramref name="kv"/> is given; <paramref name="tembMod"/> may then be per
    /// token ([B, S + N, 3·D]: the reference tokens' rows modulated at the fixed reference timestep).
    /// </summary>
    internal Tensor forward(Tensor hidden, Tensor tembMod, (Tensor Cos, Tensor Sin) rotary, Flux2KVAttentionArgs? kv)
    {
        using var scope = NewDisposeScope();
        var (shift, scale, gate) = Flux2Modulation.Split(tembMod, 1)[0];
        var output = Flux2Modulation.Modulate(hidden, _eps, shift, scale).Consume(n => attn.forward(n, rotary, kv));
        var result = Flux2Modulation.GatedResidual(hidden, gate, output);
        if (result.dtype == ScalarType.Float16) result = result.clip(-65504, 65504);
        return result.MoveToOuterDisposeScope();
    }
}
