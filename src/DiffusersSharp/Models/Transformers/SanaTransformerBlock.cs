using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// One Sana block (diffusers <c>SanaTransformerBlock</c>): the shared timestep modulation [B, 6·D] plus the block's
/// <c>scale_shift_table</c> [6, D] give shift / scale / gate for two branches. The modulated <c>norm1</c> feeds the linear
/// self-attention <c>attn1</c> (gated residual); the cross-attention <c>attn2</c> reads the unnormalised tokens and is
/// added ungated; the modulated <c>norm2</c> feeds the convolutional feed-forward <c>ff</c> (<see cref="GLUMBConv"/>) on
/// the tokens laid out as an h × w map (gated residual).
/// </summary>
public sealed class SanaTransformerBlock : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly LayerNorm norm1;
    private readonly SanaLinearAttention attn1;
    private readonly LayerNorm norm2;
    private readonly SanaCrossAttention attn2;
    private readonly GLUMBConv ff;
    private readonly Parameter scale_shift_table;
#pragma warning restore IDE1006

    /// <summary>Creates a block of <paramref name="config"/>'s widths.</summary>
    public SanaTransformerBlock(SanaTransformer2DModelConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(SanaTransformerBlock))
    {
        ArgumentNullException.ThrowIfNull(config);
        long dim = config.InnerDim;
        bool qkNorm = config.QkNorm is not null;
        norm1 = nn.LayerNorm(dim, config.NormEps, elementwise_affine: false, device: device, dtype: dtype);
        attn1 = new SanaLinearAttention(dim, config.NumAttentionHeads, config.AttentionHeadDim, config.AttentionBias, qkNorm, device, dtype);
        norm2 = nn.LayerNorm(dim, config.NormEps, elementwise_affine: config.NormElementwiseAffine, device: device, dtype: dtype);
        attn2 = new SanaCrossAttention(dim, config.CrossAttentionDim!.Value, config.NumCrossAttentionHeads!.Value, config.CrossAttentionHeadDim!.Value,
            qkNorm, outBias: true, device, dtype);
        ff = new GLUMBConv(dim, dim, config.MlpRatio, residualConnection: false, device: device, dtype: dtype);
        scale_shift_table = new Parameter(torch.zeros([6, dim], dtype: dtype ?? ScalarType.Float32, device: device), requires_grad: false);
        RegisterComponents();
    }

    /// <summary>
    /// Runs the block on the tokens <paramref name="hiddenStates"/> [B, h·w, D] (row-major over the <paramref name="height"/>
    /// × <paramref name="width"/> patch grid) with the projected caption <paramref name="encoderHiddenStates"/> [B, S, D],
    /// its additive bias <paramref name="encoderAttentionBias"/> [B, 1, S] (null: all tokens kept) and the modulation
    /// <paramref name="timestep"/> [B, 6·D].
    /// </summary>
    public Tensor forward(Tensor hiddenStates, Tensor encoderHiddenStates, Tensor? encoderAttentionBias, Tensor timestep, long height, long width)
    {
        using var scope = NewDisposeScope();
        long batch = hiddenStates.shape[0];
        var mod = (scale_shift_table.unsqueeze(0) + timestep.reshape(batch, 6, -1)).chunk(6, 1);
        Tensor shiftMsa = mod[0], scaleMsa = mod[1], gateMsa = mod[2], shiftMlp = mod[3], scaleMlp = mod[4], gateMlp = mod[5];

        var norm = norm1.forward(hiddenStates).Consume(n => n * (1 + scaleMsa) + shiftMsa).Consume(n => n.to(hiddenStates.dtype));
        var h = norm.Consume(attn1.forward).Consume(a => hiddenStates + gateMsa * a);

        var afterSelf = h;
        h = attn2.forward(afterSelf, encoderHiddenStates, encoderAttentionBias).Consume(a => a + afterSelf);
        afterSelf.Dispose();

        // The feed-forward convolves the tokens as a [B, D, h, w] map (a channels-last view, as diffusers' permute).
        norm = norm2.forward(h).Consume(n => n * (1 + scaleMlp) + shiftMlp);
        var ffOutput = norm.Consume(n => ff.forward(n.unflatten(1, [height, width]).permute(0, 3, 1, 2)))
            .Consume(f => f.flatten(2, 3).permute(0, 2, 1));
        return ffOutput.Consume(f => h + gateMlp * f).MoveToOuterDisposeScope();
    }
}
