using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Autoencoders.DC;

/// <summary>
/// diffusers' <c>SanaMultiscaleLinearAttention</c> with its <c>SanaMultiscaleAttnProcessor2_0</c> (attention_processor.py),
/// the DC-AE's "lightweight multi-scale linear attention" on NCHW maps. q, k and v are bias-free per-pixel projections
/// (<c>to_q</c> / <c>to_k</c> / <c>to_v</c>), concatenated and widened by one <see cref="SanaMultiscaleAttentionProjection"/>
/// per extra kernel size (<c>to_qkv_multiscale</c>); every scale's heads attend with ReLU feature maps on q and k. When the
/// map has more pixels than <c>attention_head_dim</c> the attention is linear and computed in float32 whatever the
/// model's type: v is padded with a row of ones so that one product yields both the numerator and the normaliser,
/// <c>(v_pad kᵀ) q</c>, divided by its last row plus eps (1e-15). Otherwise it is quadratic, <c>v · (kᵀq / (Σ kᵀq + eps))</c>,
/// with only the normalisation in float32. Then the bias-free <c>to_out</c>, <c>norm_out</c> (see
/// <see cref="DCNormalization"/>) and, with <c>residual_connection</c>, the input added.
/// </summary>
public sealed class SanaMultiscaleLinearAttention : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear to_q;
    private readonly Linear to_k;
    private readonly Linear to_v;
    private readonly ModuleList<SanaMultiscaleAttentionProjection> to_qkv_multiscale;
    private readonly Linear to_out;
    private readonly nn.Module<Tensor, Tensor> norm_out;
#pragma warning restore IDE1006
    private readonly long _attentionHeadDim;
    private readonly double _eps;
    private readonly bool _residualConnection;

    /// <summary>Creates the attention.</summary>
    /// <param name="inChannels">Input channels.</param>
    /// <param name="outChannels">Output channels (the input's when <paramref name="residualConnection"/> is set).</param>
    /// <param name="numAttentionHeads">Heads per scale; null: <c>int(inChannels // attentionHeadDim * mult)</c>.</param>
    /// <param name="attentionHeadDim">Channels per head.</param>
    /// <param name="mult">Head-count multiplier when <paramref name="numAttentionHeads"/> is null.</param>
    /// <param name="normType">"rms_norm" or "batch_norm" (diffusers' default).</param>
    /// <param name="kernelSizes">One extra scale per kernel size (diffusers' default (5,)).</param>
    /// <param name="eps">Added to the normalisers (diffusers' 1e-15).</param>
    /// <param name="residualConnection">Whether the input is added to the output.</param>
    /// <param name="device">Device of the weights.</param>
    /// <param name="dtype">Type of the weights.</param>
    public SanaMultiscaleLinearAttention(long inChannels, long outChannels, long? numAttentionHeads = null, long attentionHeadDim = 8,
        double mult = 1.0, string normType = "batch_norm", long[]? kernelSizes = null, double eps = 1e-15,
        bool residualConnection = false, Device? device = null, ScalarType? dtype = null)
        : base(nameof(SanaMultiscaleLinearAttention))
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(attentionHeadDim);
        kernelSizes ??= [5];
        long heads = numAttentionHeads ?? (long)(inChannels / attentionHeadDim * mult);
        if (heads < 1)
            throw new ArgumentException($"SanaMultiscaleLinearAttention over {inChannels} channels with attention_head_dim {attentionHeadDim} has no head.", nameof(attentionHeadDim));
        if (residualConnection && inChannels != outChannels)
            throw new ArgumentException($"a residual connection needs as many output channels as input channels ({inChannels}); got {outChannels}.", nameof(outChannels));
        _attentionHeadDim = attentionHeadDim;
        _eps = eps;
        _residualConnection = residualConnection;
        long inner = heads * attentionHeadDim;
        to_q = new Linear(inChannels, inner, hasBias: false, device, dtype);
        to_k = new Linear(inChannels, inner, hasBias: false, device, dtype);
        to_v = new Linear(inChannels, inner, hasBias: false, device, dtype);
        to_qkv_multiscale = new ModuleList<SanaMultiscaleAttentionProjection>();
        foreach (long kernelSize in kernelSizes)
            to_qkv_multiscale.Add(new SanaMultiscaleAttentionProjection(inner, heads, kernelSize, device, dtype));
        to_out = new Linear(inner * (1 + kernelSizes.Length), outChannels, hasBias: false, device, dtype);
        norm_out = DCNormalization.Create(normType, outChannels, device, dtype);
        RegisterComponents();
    }

    /// <summary>Attends over the pixels of <paramref name="hiddenStates"/> [B, C, H, W].</summary>
    public override Tensor forward(Tensor hiddenStates)
    {
        using var scope = NewDisposeScope();
        long batch = hiddenStates.shape[0], height = hiddenStates.shape[2], width = hiddenStates.shape[3];
        bool useLinearAttention = height * width > _attentionHeadDim;
        var originalDtype = hiddenStates.dtype;

        // q | k | v per pixel, on the channels-last view, concatenated and moved back to channels-first (a view).
        Tensor qkv;
        using (var channelsLast = hiddenStates.movedim([1L], [-1L]))
        using (var query0 = to_q.forward(channelsLast))
        using (var key0 = to_k.forward(channelsLast))
        using (var value0 = to_v.forward(channelsLast))
        using (var catted = cat([query0, key0, value0], 3))
            qkv = catted.movedim([-1L], [1L]);

        var scales = new List<Tensor> { qkv };
        foreach (var block in to_qkv_multiscale) scales.Add(block.forward(qkv));
        var h = cat(scales, 1);
        foreach (var t in scales) t.Dispose();
        // The linear attention's products run in float32 whatever the model's type.
        if (useLinearAttention) h = h.Consume(x => x.to(ScalarType.Float32));
        h = h.Consume(x => x.reshape(batch, -1, 3 * _attentionHeadDim, height * width));
        var parts = h.chunk(3, 2);
        using var query = nn.functional.relu(parts[0]);
        using var key = nn.functional.relu(parts[1]);
        var value = parts[2];

        Tensor attended = useLinearAttention
            ? ApplyLinearAttention(query, key, value).Consume(x => x.to(originalDtype))
            : ApplyQuadraticAttention(query, key, value);
        h.Dispose();

        var output = attended.Consume(x => x.reshape(batch, -1, height, width));
        output = output.Consume(x =>
        {
            using var channelsLast = x.movedim([1L], [-1L]);
            using var projected = to_out.forward(channelsLast);
            return projected.movedim([-1L], [1L]);
        });
        output = output.Consume(x => DCNormalization.Apply(norm_out, x));
        if (_residualConnection) output = output.Consume(x => x + hiddenStates);
        return output.MoveToOuterDisposeScope();
    }

    // diffusers' apply_linear_attention: a row of ones under v makes (v_pad kᵀ) q carry Σ_j k_j·q in its last row, the
    // normaliser of every column; the division is done in float32.
    private Tensor ApplyLinearAttention(Tensor query, Tensor key, Tensor value)
    {
        using var padded = nn.functional.pad(value, [0, 0, 0, 1], PaddingModes.Constant, 1);
        using var keyT = key.transpose(-1, -2);
        using var scores = matmul(padded, keyT);
        using var product = matmul(scores, query).to(ScalarType.Float32);
        long rows = product.shape[2] - 1;
        using var numerator = product.narrow(2, 0, rows);
        using var normaliser = product.narrow(2, rows, 1).add(_eps);
        return numerator / normaliser;
    }

    // diffusers' apply_quadratic_attention: kᵀq normalised over the keys in float32, cast back for the product with v.
    private Tensor ApplyQuadraticAttention(Tensor query, Tensor key, Tensor value)
    {
        using var keyT = key.transpose(-1, -2);
        using var scores = matmul(keyT, query).to(ScalarType.Float32);
        using var sums = scores.sum([2L], keepdim: true).add_(_eps);
        using var normalised = (scores / sums).to(value.dtype);
        return matmul(value, normalised);
    }
}
