using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// The self-attention of a Lumina2 block: diffusers' <c>Attention(qk_norm="rms_norm", kv_heads, bias=False,
/// out_bias=False)</c> run by <c>Lumina2AttnProcessor2_0</c>. Bias-free q (heads × head_dim) and k, v (kv_heads × head_dim),
/// per-head RMSNorms on q and k (eps 1e-5), the rotary embedding of each token's position on q and k (float64, returned in
/// q's type), each key / value head repeated for its heads / kv_heads query heads (grouped-query attention),
/// <c>scaled_dot_product_attention</c> (scale 1/√head_dim) under an optional key mask, and a bias-free <c>to_out.0</c>.
/// </summary>
public sealed class Lumina2Attention : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear to_q, to_k, to_v;
    private readonly ModuleList<nn.Module<Tensor, Tensor>> to_out;
    private readonly RMSNorm norm_q, norm_k;
#pragma warning restore IDE1006
    private readonly int _heads;
    private readonly int _kvHeads;
    private readonly int _headDim;

    /// <summary>Creates the attention of width <paramref name="dim"/> with <paramref name="heads"/> query and <paramref name="kvHeads"/> key / value heads.</summary>
    /// <exception cref="ArgumentException">The head counts do not divide as grouped-query attention needs.</exception>
    public Lumina2Attention(int dim, int heads, int kvHeads, Device? device = null, ScalarType? dtype = null) : base(nameof(Lumina2Attention))
    {
        if (heads < 1 || kvHeads < 1 || heads % kvHeads != 0 || dim % heads != 0)
            throw new ArgumentException($"Lumina2 attention: {heads} heads on {kvHeads} key / value heads of a {dim}-wide model do not divide evenly.");
        _heads = heads;
        _kvHeads = kvHeads;
        _headDim = dim / heads;
        to_q = new Linear(dim, (long)heads * _headDim, hasBias: false, device: device, dtype: dtype);
        to_k = new Linear(dim, (long)kvHeads * _headDim, hasBias: false, device: device, dtype: dtype);
        to_v = new Linear(dim, (long)kvHeads * _headDim, hasBias: false, device: device, dtype: dtype);
        norm_q = new RMSNorm(_headDim, 1e-5, device, dtype);
        norm_k = new RMSNorm(_headDim, 1e-5, device, dtype);
        to_out = new ModuleList<nn.Module<Tensor, Tensor>>(new Linear((long)heads * _headDim, dim, hasBias: false, device: device, dtype: dtype), nn.Dropout(0.0));
        RegisterComponents();
    }

    /// <summary>
    /// Attends over <paramref name="x"/> [B, S, dim] with the rotary (cos, sin) [B, S, head_dim] and the key mask
    /// <paramref name="mask"/> [B, S] (true or non-zero: a key attention may use; null: every key).
    /// </summary>
    public Tensor forward(Tensor x, Tensor? mask, (Tensor Cos, Tensor Sin) rotary)
    {
        using var scope = NewDisposeScope();
        long batch = x.shape[0], length = x.shape[1];
        // diffusers views q / k / v as [B, S, heads, head_dim], norms and rotates there, and attends in [B, heads, S, head_dim].
        var query = norm_q.forward(to_q.forward(x).view(batch, length, _heads, _headDim));
        var key = norm_k.forward(to_k.forward(x).view(batch, length, _kvHeads, _headDim));
        var value = to_v.forward(x).view(batch, length, _kvHeads, _headDim);
        query = FluxPosEmbed.Apply(query.transpose(1, 2), rotary);
        key = FluxPosEmbed.Apply(key.transpose(1, 2), rotary);
        value = value.transpose(1, 2);
        int repeats = _heads / _kvHeads;
        if (repeats > 1)
        {
            // Key / value head j serves query heads j·repeats … j·repeats + repeats − 1 (diffusers' unsqueeze-repeat-flatten).
            key = key.repeat_interleave(repeats, dim: 1, output_size: _heads);
            value = value.repeat_interleave(repeats, dim: 1, output_size: _heads);
        }
        var keep = mask is null ? null : (mask.dtype == ScalarType.Bool ? mask : mask.ne(0)).view(batch, 1, 1, length);
        var attended = nn.functional.scaled_dot_product_attention(query, key, value, keep);
        attended = attended.transpose(1, 2).reshape(batch, length, (long)_heads * _headDim).to(query.dtype);
        return to_out[0].forward(attended).MoveToOuterDisposeScope();
    }
}
