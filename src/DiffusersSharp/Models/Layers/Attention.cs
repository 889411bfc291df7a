using DiffusersSharp.Models.IPAdapters;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// diffusers' <c>Attention</c> as <c>BasicTransformerBlock</c> builds it, run by its default <c>AttnProcessor2_0</c>:
/// <c>to_q</c> from the queries, <c>to_k</c> / <c>to_v</c> from <c>encoder_hidden_states</c> (or the queries for
/// self-attention), <c>heads</c> x <c>dim_head</c>, <c>scaled_dot_product_attention</c> with its default scale
/// 1/sqrt(dim_head), then <c>to_out.0</c> (Linear with bias; <c>to_out.1</c> is a zero dropout). No residual, no
/// output rescale. <c>upcast_attention</c> does not exist here: AttnProcessor2_0 ignores it as well. With an IP-Adapter
/// attached (<see cref="IPAdapters.IPAdapterAttnProcessor"/>, registered as <c>processor</c> like diffusers' processor
/// module) it runs as <c>IPAdapterAttnProcessor2_0</c>: image tokens appended after the text are split off the end of
/// <c>encoder_hidden_states</c> and attended to separately.
/// </summary>
public sealed class Attention : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear to_q;
    private readonly Linear to_k;
    private readonly Linear to_v;
    private readonly ModuleList<Linear> to_out;
    private readonly LayerNorm? norm_cross;
#pragma warning restore IDE1006
    private readonly int _heads;
    private readonly bool _isCrossAttention;
    private IPAdapterAttnProcessor? _ipAdapter;

    /// <summary>Builds the layer.</summary>
    /// <param name="queryDim">Width of the queries (and of the output).</param>
    /// <param name="crossAttentionDim">Width of the key/value source, or null for self-attention.</param>
    /// <param name="heads">Number of heads.</param>
    /// <param name="dimHead">Width of one head.</param>
    /// <param name="bias">Bias of to_q / to_k / to_v (false in the UNets).</param>
    /// <param name="outBias">Bias of to_out.0.</param>
    /// <param name="device">Device of the parameters.</param>
    /// <param name="dtype">Dtype of the parameters.</param>
    /// <param name="crossAttentionNorm">diffusers' <c>cross_attention_norm="layer_norm"</c> (the K-UNet's cross-attentions): a
    /// LayerNorm (<c>norm_cross</c>) over the key/value source when one is given.</param>
    public Attention(long queryDim, long? crossAttentionDim, int heads, long dimHead, bool bias = false, bool outBias = true,
        Device? device = null, ScalarType? dtype = null, bool crossAttentionNorm = false)
        : base(nameof(Attention))
    {
        if (heads <= 0) throw new ArgumentOutOfRangeException(nameof(heads), heads, "heads must be positive.");
        _heads = heads;
        _isCrossAttention = crossAttentionDim is not null;
        long inner = dimHead * heads;
        long kvDim = crossAttentionDim ?? queryDim;
        to_q = new Linear(queryDim, inner, hasBias: bias, device: device, dtype: dtype);
        to_k = new Linear(kvDim, inner, hasBias: bias, device: device, dtype: dtype);
        to_v = new Linear(kvDim, inner, hasBias: bias, device: device, dtype: dtype);
        to_out = new ModuleList<Linear>(new Linear(inner, queryDim, hasBias: outBias, device: device, dtype: dtype));
        if (crossAttentionNorm) norm_cross = nn.LayerNorm(kvDim, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Width of the key/value source (cross_attention_dim for cross-attention).</summary>
    internal long KeyValueDim => to_k.weight!.shape[1];

    /// <summary>Width of the attention (heads x dim_head), diffusers' hidden_size of an IP-Adapter processor.</summary>
    internal long InnerDim => to_k.weight!.shape[0];

    /// <summary>diffusers' <c>is_cross_attention</c>: built with a cross_attention_dim (whatever it is called with).</summary>
    internal bool IsCrossAttention => _isCrossAttention;

    /// <summary>
    /// Perturbed-Attention Guidance for the call in progress (diffusers' PAG processors, which <c>_set_pag_attn_processor</c>
    /// installs on the chosen self-attention layers for one pipeline call): 0 runs the attention as usual; 2
    /// (<c>PAGIdentitySelfAttnProcessor2_0</c>, the batch [original, perturbed]) or 3 (<c>PAGCFGIdentitySelfAttnProcessor2_0</c>,
    /// [uncond, cond, perturbed]) splits the batch into that many equal parts and gives the last the identity attention: its
    /// value projection straight through <c>to_out.0</c>. Set and cleared by <see cref="Unets.UNet2DConditionModel.PerturbAttention"/>.
    /// </summary>
    internal int PerturbedChunks { get; set; }

    /// <summary>Attaches the IP-Adapter key/value projections (diffusers' set_attn_processor with IPAdapterAttnProcessor2_0).</summary>
    internal void AttachIpAdapter(IPAdapterAttnProcessor processor)
    {
        if (_ipAdapter is not null) throw new InvalidOperationException("This attention layer already has an IP-Adapter.");
        register_module("processor", processor);
        _ipAdapter = processor;
    }

    /// <summary>Self-attention over <paramref name="hiddenStates"/> [B, N, queryDim].</summary>
    public override Tensor forward(Tensor hiddenStates) => forward(hiddenStates, null);

    /// <summary>Attends from <paramref name="hiddenStates"/> [B, N, queryDim] to <paramref name="encoderHiddenStates"/> [B, S, crossAttentionDim] (null: to itself).</summary>
    public Tensor forward(Tensor hiddenStates, Tensor? encoderHiddenStates) => forward(hiddenStates, encoderHiddenStates, null);

    /// <summary>
    /// Attends from <paramref name="hiddenStates"/> [B, N, queryDim] to <paramref name="encoderHiddenStates"/> [B, S,
    /// crossAttentionDim] (null: to itself), adding <paramref name="attentionBias"/> [B, 1, S] to the scores of every head
    /// and query (diffusers' <c>attention_mask</c> after <c>prepare_attention_mask</c>: 0 keeps a key, -10000 drops it).
    /// </summary>
    public Tensor forward(Tensor hiddenStates, Tensor? encoderHiddenStates, Tensor? attentionBias)
    {
        if (PerturbedChunks == 0) return Attend(hiddenStates, encoderHiddenStates, attentionBias);
        long total = hiddenStates.shape[0];
        if (total % PerturbedChunks != 0)
            throw new ArgumentException($"Perturbed-attention guidance splits the batch into {PerturbedChunks} equal parts; got a batch of {total}.", nameof(hiddenStates));
        using var scope = NewDisposeScope();
        long perturbed = total / PerturbedChunks;
        // The PAG processors: the first parts attend as usual (the layer is a self-attention, so no mask reaches it); the
        // last part's attention is the identity, its values through the output projection.
        var original = Attend(hiddenStates.narrow(0, 0, total - perturbed), encoderHiddenStates, attentionBias);
        var identity = to_out[0].forward(to_v.forward(hiddenStates.narrow(0, total - perturbed, perturbed)));
        return cat([original, identity], 0).MoveToOuterDisposeScope();
    }

    private Tensor Attend(Tensor hiddenStates, Tensor? encoderHiddenStates, Tensor? attentionBias)
    {
        using var scope = NewDisposeScope();
        long batch = hiddenStates.shape[0];
        var query = to_q.forward(hiddenStates);
        Tensor[]? ipStates = null;
        if (_ipAdapter?.State.TokenCounts is { } counts && encoderHiddenStates is not null)
        {
            // IPAdapterAttnProcessor2_0's legacy input: the image tokens of each adapter follow the text tokens.
            long end = encoderHiddenStates.shape[1] - counts.Sum();
            ipStates = new Tensor[counts.Length];
            long start = end;
            for (int i = 0; i < counts.Length; i++)
            {
                ipStates[i] = encoderHiddenStates.narrow(1, start, counts[i]);
                start += counts[i];
            }
            encoderHiddenStates = encoderHiddenStates.narrow(1, 0, end);
        }
        // diffusers' processors: norm_encoder_hidden_states on given encoder states only.
        var source = encoderHiddenStates is null ? hiddenStates : norm_cross?.forward(encoderHiddenStates) ?? encoderHiddenStates;
        var key = to_k.forward(source);
        var value = to_v.forward(source);
        long inner = key.shape[^1];
        long headDim = inner / _heads;
        query = query.view(batch, -1, _heads, headDim).transpose(1, 2);
        key = key.view(batch, -1, _heads, headDim).transpose(1, 2);
        value = value.view(batch, -1, _heads, headDim).transpose(1, 2);
        var mask = attentionBias is null ? null : attentionBias.reshape(batch, 1, 1, -1).to(query.dtype);
        var attended = nn.functional.scaled_dot_product_attention(query, key, value, mask)
            .Consume(a => a.transpose(1, 2).reshape(batch, -1, _heads * headDim).to(query.dtype));
        if (ipStates is not null)
        {
            var scales = _ipAdapter!.State.Scales;
            for (int i = 0; i < ipStates.Length; i++)
            {
                if (scales[i] == 0) continue; // diffusers skips an adapter at scale 0
                var ipKey = _ipAdapter.KeyProjection(i).forward(ipStates[i]).view(batch, -1, _heads, headDim).transpose(1, 2);
                var ipValue = _ipAdapter.ValueProjection(i).forward(ipStates[i]).view(batch, -1, _heads, headDim).transpose(1, 2);
                var ipAttended = nn.functional.scaled_dot_product_attention(query, ipKey, ipValue);
                ipAttended = ipAttended.transpose(1, 2).reshape(batch, -1, _heads * headDim).to(query.dtype);
                attended = attended + scales[i] * ipAttended;
            }
        }
        return to_out[0].forward(attended).MoveToOuterDisposeScope();
    }
}
