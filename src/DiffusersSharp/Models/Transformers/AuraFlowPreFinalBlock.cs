using TorchSharp;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// AuraFlow's output modulation (diffusers <c>AuraFlowPreFinalBlock</c>, the model's <c>norm_out</c>): <c>emb =
/// linear(SiLU(temb))</c> (bias-free) split into scale and shift, <b>scale first</b>, and <c>x · (1 + scale) + shift</c>.
/// Despite its place it normalises nothing.
/// </summary>
public sealed class AuraFlowPreFinalBlock : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear linear;
#pragma warning restore IDE1006

    /// <summary>Creates the block for tokens of width <paramref name="embeddingDim"/> and a conditioning of width <paramref name="conditioningEmbeddingDim"/>.</summary>
    public AuraFlowPreFinalBlock(long embeddingDim, long conditioningEmbeddingDim, Device? device = null, ScalarType? dtype = null)
        : base(nameof(AuraFlowPreFinalBlock))
    {
        linear = new Linear(conditioningEmbeddingDim, 2 * embeddingDim, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Modulates <paramref name="x"/> [B, N, D] with <paramref name="conditioningEmbedding"/> [B, C].</summary>
    public Tensor forward(Tensor x, Tensor conditioningEmbedding)
    {
        using var scope = NewDisposeScope();
        var emb = linear.forward(nn.functional.silu(conditioningEmbedding).to(x.dtype));
        var c = emb.chunk(2, 1);
        return (x * (1 + c[0]).unsqueeze(1)).add_(c[1].unsqueeze(1)).MoveToOuterDisposeScope();
    }
}
