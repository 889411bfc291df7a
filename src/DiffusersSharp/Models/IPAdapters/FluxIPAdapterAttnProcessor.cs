using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.IPAdapters;

/// <summary>
/// The weights and the image attention of diffusers' <c>FluxIPAdapterAttnProcessor</c> on one double-stream Flux block:
/// per adapter a key and a value projection of the image tokens (<c>to_k_ip.N</c>, <c>to_v_ip.N</c>, Linear with bias
/// from joint_attention_dim to the block's inner width) and the adapter's scale in this block. The block's image query
/// (after its RMSNorm, before the rotary embedding) attends to each adapter's image tokens on its own; the sum of the
/// results times the scales is added to the image stream after the feed-forward (no output projection), as diffusers
/// does. Registered as the attention's <c>processor</c>, so its keys are diffusers'
/// (<c>transformer_blocks.N.attn.processor.to_k_ip.0.weight</c>).
/// </summary>
public sealed class FluxIPAdapterAttnProcessor : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly ModuleList<Linear> to_k_ip;
    private readonly ModuleList<Linear> to_v_ip;
#pragma warning restore IDE1006
    private readonly double[] _scale;

    /// <summary>Builds the projections of <paramref name="adapters"/> adapters, each at scale 1.0 (diffusers' default).</summary>
    public FluxIPAdapterAttnProcessor(long hiddenSize, long crossAttentionDim, int adapters, Device? device = null, ScalarType? dtype = null)
        : base(nameof(FluxIPAdapterAttnProcessor))
    {
        if (adapters < 1) throw new ArgumentOutOfRangeException(nameof(adapters), adapters, "At least one adapter.");
        to_k_ip = new ModuleList<Linear>();
        to_v_ip = new ModuleList<Linear>();
        for (int i = 0; i < adapters; i++)
        {
            to_k_ip.Add(new Linear(crossAttentionDim, hiddenSize, hasBias: true, device: device, dtype: dtype));
            to_v_ip.Add(new Linear(crossAttentionDim, hiddenSize, hasBias: true, device: device, dtype: dtype));
        }
        _scale = Enumerable.Repeat(1.0, adapters).ToArray();
        RegisterComponents();
    }

    /// <summary>Number of adapters.</summary>
    public int Count => _scale.Length;

    /// <summary>The scale of each adapter in this block (diffusers' <c>processor.scale</c>).</summary>
    public IReadOnlyList<double> Scale => _scale;

    internal void SetScale(int adapter, double scale) => _scale[adapter] = scale;

    /// <summary>
    /// The image attention: <paramref name="query"/> [B, heads, N, head_dim] is the block's normed image query (before
    /// the rotary embedding); <paramref name="ipHiddenStates"/> holds, per adapter, its projected image tokens
    /// [B', images, tokens, joint_attention_dim] with B' · images · tokens a multiple of B (diffusers views them as
    /// [B, -1, heads, head_dim]). Returns the scaled sum [B, N, heads · head_dim], or null when every scale is 0.
    /// </summary>
    public Tensor? forward(Tensor query, IReadOnlyList<Tensor> ipHiddenStates)
    {
        ArgumentNullException.ThrowIfNull(query);
        ArgumentNullException.ThrowIfNull(ipHiddenStates);
        if (ipHiddenStates.Count != Count)
            throw new ArgumentException($"ip_hidden_states must have one tensor per IP-Adapter ({Count}), got {ipHiddenStates.Count}.", nameof(ipHiddenStates));
        long batch = query.shape[0], heads = query.shape[1], headDim = query.shape[3];
        using var scope = NewDisposeScope();
        Tensor? sum = null;
        for (int i = 0; i < Count; i++)
        {
            if (_scale[i] == 0) continue; // diffusers adds 0 x the attention: the same sum
            var tokens = ipHiddenStates[i].to(query.dtype);
            var key = to_k_ip[i].forward(tokens).view(batch, -1, heads, headDim).transpose(1, 2);
            var value = to_v_ip[i].forward(tokens).view(batch, -1, heads, headDim).transpose(1, 2);
            var attended = nn.functional.scaled_dot_product_attention(query, key, value);
            var term = _scale[i] * attended.transpose(1, 2).reshape(batch, -1, heads * headDim).to(query.dtype);
            sum = sum is null ? term : sum + term;
        }
        return sum?.MoveToOuterDisposeScope();
    }
}
