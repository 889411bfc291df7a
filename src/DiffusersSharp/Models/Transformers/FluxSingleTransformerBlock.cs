using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// One single-stream Flux block (diffusers <c>FluxSingleTransformerBlock</c>): text and image tokens as one sequence
/// (text first), one AdaLN-Zero modulation feeding in parallel a self-attention without output projection (RMSNorm on q
/// and k, rotary positions) and a tanh-GELU MLP branch; both are concatenated along the channels, projected by
/// <c>proj_out</c>, gated and added to the input. In float16 the result is clipped to ±65504, as diffusers does. Built
/// <c>pruned</c> it is diffusers' <c>ChromaSingleTransformerBlock</c>: no modulation layer (<c>norm</c> is
/// <c>ChromaAdaLayerNormZeroSinglePruned</c>, without weights), the model supplies shift, scale and gate, and an attention
/// mask over the joint sequence may be given.
/// </summary>
public sealed class FluxSingleTransformerBlock : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly AdaLayerNormZeroSingle? norm;
    private readonly Linear proj_mlp;
    private readonly TorchSharp.Modules.GELU act_mlp;
    private readonly Linear proj_out;
    private readonly JointAttention attn;
#pragma warning restore IDE1006

    /// <summary>
    /// Creates a block of width <paramref name="dim"/> with an MLP branch of width <c>int(dim × mlpRatio)</c>;
    /// <paramref name="pruned"/> leaves out the modulation layer (Chroma).
    /// </summary>
    public FluxSingleTransformerBlock(long dim, int numAttentionHeads, int attentionHeadDim, double mlpRatio = 4.0,
        Device? device = null, ScalarType? dtype = null, bool pruned = false) : base(nameof(FluxSingleTransformerBlock))
    {
        long mlpHiddenDim = (long)(dim * mlpRatio);
        if (!pruned) norm = new AdaLayerNormZeroSingle(dim, device, dtype);
        proj_mlp = new Linear(dim, mlpHiddenDim, hasBias: true, device: device, dtype: dtype);
        act_mlp = nn.GELU(TorchSharp.Modules.GELU.Approximate.tanh);
        proj_out = new Linear(dim + mlpHiddenDim, dim, hasBias: true, device: device, dtype: dtype);
        attn = new JointAttention(dim, numAttentionHeads, attentionHeadDim, joint: false, contextPreOnly: false, qkRmsNorm: true,
            device, dtype, preOnly: true);
        RegisterComponents();
    }

    /// <summary>
    /// Runs the block on the text tokens <paramref name="context"/> [B, S, D] and image tokens <paramref name="x"/> [B, N, D]
    /// with the conditioning <paramref name="temb"/> ([B, D]; a pruned block's modulation itself, [B, 3, D]) and the rotary
    /// table of the joint sequence (text, then image), under <paramref name="attentionMask"/> if given (Chroma). Returns
    /// the new text and image tokens.
    /// </summary>
    public (Tensor Context, Tensor X) forward(Tensor x, Tensor context, Tensor temb, (Tensor Cos, Tensor Sin) rotary, Tensor? attentionMask = null)
    {
        long textLength = context.shape[1];
        var joint = torch.cat([context, x], 1);
        var (normed, gate) = norm?.forward(joint, temb) ?? AdaLayerNormZeroSingle.Pruned(joint, temb);
        Tensor projected;
        using (var scope = NewDisposeScope())
        {
            // The MLP branch is 4x the width: it and the concatenation are freed as soon as proj_out has read them.
            var mlp = act_mlp.forward(proj_mlp.forward(normed));
            var (attnOut, _) = attn.forward(normed, null, rotary: rotary, attentionMask: attentionMask);
            projected = proj_out.forward(torch.cat([attnOut, mlp], 2)).MoveToOuterDisposeScope();
        }
        var h = AdaLayerNormZero.GatedResidual(joint, gate, projected);
        if (h.dtype == ScalarType.Float16) h = h.clip(-65504, 65504);
        return (h.narrow(1, 0, textLength), h.narrow(1, textLength, h.shape[1] - textLength));
    }
}
