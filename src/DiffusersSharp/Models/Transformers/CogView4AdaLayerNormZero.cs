using TorchSharp;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// diffusers' <c>CogView4AdaLayerNormZero</c>: one <c>linear</c> of the conditioning (no activation here: the model applies
/// SiLU once) gives twelve modulations, shift / scale / gate for attention and MLP, for the image and the text stream;
/// both streams are layer-normed (no affine, eps 1e-5) and modulated for the attention.
/// </summary>
public sealed class CogView4AdaLayerNormZero : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear linear;
#pragma warning restore IDE1006
    private readonly long _dim;

    /// <summary>Creates the modulation of width <paramref name="dim"/> from a conditioning of width <paramref name="embeddingDim"/>.</summary>
    public CogView4AdaLayerNormZero(long embeddingDim, long dim, Device? device = null, ScalarType? dtype = null) : base(nameof(CogView4AdaLayerNormZero))
    {
        _dim = dim;
        linear = new Linear(embeddingDim, 12 * dim, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>The modulated inputs of the attention and the modulations the block needs after it.</summary>
    /// <param name="X">The image stream, normed and modulated for the attention.</param>
    /// <param name="Context">The text stream, likewise.</param>
    /// <param name="Gates">[B, 12, D] views: the twelve chunks in diffusers' order (shift_msa, c_shift_msa, scale_msa,
    /// c_scale_msa, gate_msa, c_gate_msa, shift_mlp, c_shift_mlp, scale_mlp, c_scale_mlp, gate_mlp, c_gate_mlp).</param>
    public readonly record struct Output(Tensor X, Tensor Context, Tensor[] Gates)
    {
        /// <summary>Chunk <paramref name="i"/> as [B, 1, D], ready to broadcast over tokens.</summary>
        public Tensor At(int i) => Gates[i].unsqueeze(1);
    }

    /// <summary>Norms and modulates <paramref name="x"/> [B, N, D] and <paramref name="context"/> [B, S, D] by <paramref name="temb"/> [B, E].</summary>
    public Output forward(Tensor x, Tensor context, Tensor temb)
    {
        var dtype = x.dtype;
        var normX = nn.functional.layer_norm(x, [_dim], eps: 1e-5).to(dtype);
        var normContext = nn.functional.layer_norm(context, [_dim], eps: 1e-5).to(dtype);
        var chunks = linear.forward(temb).chunk(12, 1);
        var modulatedX = normX * (1 + chunks[2].unsqueeze(1)) + chunks[0].unsqueeze(1);
        var modulatedContext = normContext * (1 + chunks[3].unsqueeze(1)) + chunks[1].unsqueeze(1);
        return new Output(modulatedX, modulatedContext, chunks);
    }
}
