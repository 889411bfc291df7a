using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// diffusers' <c>Transformer2DModel</c> for continuous inputs (the UNets' spatial transformer): GroupNorm (eps 1e-6),
/// <c>proj_in</c> (1x1 conv before flattening to tokens, or Linear after it with <c>use_linear_projection</c>),
/// <c>transformer_blocks</c>, <c>proj_out</c> (the mirror image), plus the input as residual. Patched and vectorised
/// inputs (PixArt, VQ-diffusion) are not implemented.
/// </summary>
public sealed class Transformer2DModel : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly GroupNorm norm;
    private readonly nn.Module<Tensor, Tensor> proj_in;
    private readonly ModuleList<BasicTransformerBlock> transformer_blocks;
    private readonly nn.Module<Tensor, Tensor> proj_out;
#pragma warning restore IDE1006
    private readonly bool _useLinearProjection;
    private readonly long _innerDim;

    /// <summary>Builds the transformer.</summary>
    /// <param name="numAttentionHeads">Heads of every attention.</param>
    /// <param name="attentionHeadDim">Width of one head (inner width = heads x this).</param>
    /// <param name="inChannels">Channels in and out.</param>
    /// <param name="numLayers">Number of transformer blocks.</param>
    /// <param name="normNumGroups">Groups of the input GroupNorm.</param>
    /// <param name="crossAttentionDim">Width of the text states.</param>
    /// <param name="useLinearProjection">Linear instead of 1x1 conv projections.</param>
    /// <param name="onlyCrossAttention">Passed to every block.</param>
    /// <param name="device">Device of the parameters.</param>
    /// <param name="dtype">Dtype of the parameters.</param>
    public Transformer2DModel(int numAttentionHeads, long attentionHeadDim, long inChannels, int numLayers, long normNumGroups,
        long? crossAttentionDim, bool useLinearProjection, bool onlyCrossAttention = false, Device? device = null, ScalarType? dtype = null)
        : base(nameof(Transformer2DModel))
    {
        _useLinearProjection = useLinearProjection;
        _innerDim = numAttentionHeads * attentionHeadDim;
        norm = AffineGroupNorm.Create(normNumGroups, inChannels, 1e-6, device, dtype);
        proj_in = useLinearProjection
            ? new Linear(inChannels, _innerDim, hasBias: true, device: device, dtype: dtype)
            : nn.Conv2d(inChannels, _innerDim, 1, stride: 1, padding: 0L, device: device, dtype: dtype);
        transformer_blocks = new ModuleList<BasicTransformerBlock>();
        for (int i = 0; i < numLayers; i++)
            transformer_blocks.Add(new BasicTransformerBlock(_innerDim, numAttentionHeads, attentionHeadDim, crossAttentionDim,
                onlyCrossAttention, device: device, dtype: dtype));
        proj_out = useLinearProjection
            ? new Linear(_innerDim, inChannels, hasBias: true, device: device, dtype: dtype)
            : nn.Conv2d(_innerDim, inChannels, 1, stride: 1, padding: 0L, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Applies the transformer without text.</summary>
    public override Tensor forward(Tensor hiddenStates) => forward(hiddenStates, null);

    /// <summary>Applies the transformer to <paramref name="hiddenStates"/> [B, C, H, W] with text [B, S, D]; returns [B, C, H, W].</summary>
    public Tensor forward(Tensor hiddenStates, Tensor? encoderHiddenStates)
    {
        using var scope = NewDisposeScope();
        long batch = hiddenStates.shape[0], height = hiddenStates.shape[2], width = hiddenStates.shape[3];
        var residual = hiddenStates;
        // The token-layout copies and projections each free their input once done (see Temporaries).
        var h = norm.forward(hiddenStates);
        long inner;
        if (!_useLinearProjection)
        {
            h = h.Consume(proj_in.forward);
            inner = h.shape[1];
            h = h.Consume(x => x.permute(0, 2, 3, 1).reshape(batch, height * width, inner));
        }
        else
        {
            inner = h.shape[1];
            h = h.Consume(x => x.permute(0, 2, 3, 1).reshape(batch, height * width, inner));
            h = h.Consume(proj_in.forward);
        }

        foreach (var block in transformer_blocks)
        {
            using var blockScope = NewDisposeScope();
            var next = block.forward(h, encoderHiddenStates).MoveToOuterDisposeScope();
            h.Dispose(); // only this method holds the previous tokens
            h = next;
        }

        // diffusers reshapes with the inner width it read at the input (equal to the channel count in every UNet).
        if (!_useLinearProjection)
        {
            h = h.Consume(x => x.reshape(batch, height, width, inner).permute(0, 3, 1, 2).contiguous());
            h = h.Consume(proj_out.forward);
        }
        else
        {
            h = h.Consume(proj_out.forward);
            h = h.Consume(x => x.reshape(batch, height, width, inner).permute(0, 3, 1, 2).contiguous());
        }
        return h.add_(residual).MoveToOuterDisposeScope();
    }
}
