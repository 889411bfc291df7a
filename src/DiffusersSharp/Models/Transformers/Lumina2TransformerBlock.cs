using DiffusersSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// diffusers' <c>Lumina2TransformerBlock</c>, used by the context refiner (no modulation), the noise refiner and the main
/// layers (modulated): pre- and post-RMSNormed self-attention and SwiGLU feed-forward (<see cref="LuminaFeedForward"/>,
/// hidden width from 4·dim), each added to the input. With modulation, <c>norm1</c> is a <see cref="LuminaRMSNormZero"/>:
/// the timestep embedding scales each pre-norm by <c>1 + scale</c> and gates each branch by <c>tanh(gate)</c>; without,
/// <c>norm1</c> is a plain RMSNorm.
/// </summary>
public sealed class Lumina2TransformerBlock : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Lumina2Attention attn;
    private readonly LuminaFeedForward feed_forward;
    private readonly nn.Module norm1; // LuminaRMSNormZero with modulation, RMSNorm without
    private readonly RMSNorm ffn_norm1, norm2, ffn_norm2;
#pragma warning restore IDE1006

    /// <summary>Creates a block of <paramref name="config"/>'s widths, with the timestep modulation or without.</summary>
    public Lumina2TransformerBlock(Lumina2Transformer2DModelConfig config, bool modulation, Device? device = null, ScalarType? dtype = null)
        : base(nameof(Lumina2TransformerBlock))
    {
        ArgumentNullException.ThrowIfNull(config);
        int dim = config.HiddenSize;
        attn = new Lumina2Attention(dim, config.NumAttentionHeads, config.NumKvHeads, device, dtype);
        feed_forward = new LuminaFeedForward(dim, 4L * dim, config.MultipleOf, config.FfnDimMultiplier, device, dtype);
        norm1 = modulation ? new LuminaRMSNormZero(dim, config.NormEps, device, dtype) : new RMSNorm(dim, config.NormEps, device, dtype);
        ffn_norm1 = new RMSNorm(dim, config.NormEps, device, dtype);
        norm2 = new RMSNorm(dim, config.NormEps, device, dtype);
        ffn_norm2 = new RMSNorm(dim, config.NormEps, device, dtype);
        RegisterComponents();
    }

    /// <summary>Whether the block is modulated by the timestep embedding.</summary>
    public bool Modulated => norm1 is LuminaRMSNormZero;

    /// <summary>
    /// Runs the block on <paramref name="hiddenStates"/> [B, S, dim] with the key mask <paramref name="attentionMask"/>
    /// [B, S] (null: every key), the rotary (cos, sin) [B, S, head_dim], and for a modulated block the timestep embedding
    /// <paramref name="temb"/> [B, min(dim, 1024)].
    /// </summary>
    /// <exception cref="ArgumentException">A modulated block got no embedding.</exception>
    public Tensor forward(Tensor hiddenStates, Tensor? attentionMask, (Tensor Cos, Tensor Sin) rotary, Tensor? temb)
    {
        using var scope = NewDisposeScope();
        var x = hiddenStates;
        Tensor result;
        if (norm1 is LuminaRMSNormZero modulated)
        {
            if (temb is null) throw new ArgumentException("A modulated Lumina2 block needs the timestep embedding.", nameof(temb));
            var (normed, gateMsa, scaleMlp, gateMlp) = modulated.forward(x, temb);
            var attnOut = attn.forward(normed, attentionMask, rotary);
            x = x + gateMsa.unsqueeze(1).tanh() * norm2.forward(attnOut);
            var mlpOut = feed_forward.forward(ffn_norm1.forward(x) * (scaleMlp.unsqueeze(1) + 1.0));
            result = x + gateMlp.unsqueeze(1).tanh() * ffn_norm2.forward(mlpOut);
        }
        else
        {
            var attnOut = attn.forward(((RMSNorm)norm1).forward(x), attentionMask, rotary);
            x = x + norm2.forward(attnOut);
            result = x + ffn_norm2.forward(feed_forward.forward(ffn_norm1.forward(x)));
        }
        return result.MoveToOuterDisposeScope();
    }
}
