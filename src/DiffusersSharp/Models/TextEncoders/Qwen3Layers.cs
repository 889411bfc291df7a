using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// The shape of one Llama-style decoder layer, shared by Qwen3 (q / k norms, one bias switch for all four projections),
/// Qwen2 / Qwen2.5-VL's language model (biased q / k / v, unbiased o, no q / k norms) and GLM (the same projections as
/// Qwen2, its own rotary application: <see cref="Rotary"/>).
/// </summary>
internal sealed record QwenDecoderSpec(int HiddenSize, int IntermediateSize, int Heads, int KeyValueHeads, int HeadDim, string HiddenAct,
    double RmsNormEps, bool QkvBias, bool OutputBias, bool QkNorm)
{
    /// <summary>How queries and keys [B, H, L, head_dim] are rotated by (cos, sin): Qwen's rotate-half over the whole head by
    /// default (<see cref="Qwen3Rotary.Apply"/>).</summary>
    public Func<Tensor, Tensor, Tensor, Tensor> Rotary { get; init; } = Qwen3Rotary.Apply;

    /// <summary>Qwen3's layers (transformers' <c>Qwen3DecoderLayer</c>).</summary>
    public static QwenDecoderSpec Of(Qwen3Config c) => new(c.HiddenSize, c.IntermediateSize, c.NumAttentionHeads, c.KeyValueHeads, c.HeadDim,
        c.HiddenAct, c.RmsNormEps, c.AttentionBias, c.AttentionBias, QkNorm: true);
}

/// <summary>
/// Qwen3's rotary position embedding (transformers' default rope): inverse frequencies
/// <c>1 / theta^(arange(0, head_dim, 2) / head_dim)</c>, angles <c>position · inv_freq</c> duplicated over the two halves,
/// cos / sin computed in float32 and cast to the activations' dtype, as <c>Qwen3RotaryEmbedding</c> does.
/// </summary>
internal static class Qwen3Rotary
{
    /// <summary>cos and sin [1, 1, length, head_dim] in <paramref name="dtype"/> for positions 0 .. length-1.</summary>
    public static (Tensor Cos, Tensor Sin) CosSin(long length, int headDim, double theta, ScalarType dtype, Device device)
    {
        using var positions = arange(length, dtype: ScalarType.Int64, device: device).unsqueeze(0);
        return CosSin(positions, headDim, theta, dtype);
    }

    /// <summary>cos and sin [B, 1, L, head_dim] in <paramref name="dtype"/> for integer positions [B, L].</summary>
    public static (Tensor Cos, Tensor Sin) CosSin(Tensor positions, int headDim, double theta, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var device = positions.device;
        var exponent = arange(0, headDim, 2, dtype: ScalarType.Int64, device: device).to(ScalarType.Float32) / (double)headDim;
        // Python's `1.0 / (base ** x)`: torch.pow(scalar, tensor), then Tensor.__rtruediv__, which is reciprocal() * 1.0.
        var invFreq = full_like(exponent, theta).pow(exponent).reciprocal();
        // [B, L, head_dim / 2]: one product each, as transformers' matmul of [head_dim / 2, 1] by [1, L].
        var freqs = positions.to(ScalarType.Float32).unsqueeze(2) * invFreq.view(1, 1, -1);
        var emb = cat([freqs, freqs], -1);
        var cos = emb.cos().to(dtype).unsqueeze(1);
        var sin = emb.sin().to(dtype).unsqueeze(1);
        return (cos.MoveToOuterDisposeScope(), sin.MoveToOuterDisposeScope());
    }

    /// <summary><c>x · cos + rotate_half(x) · sin</c> with <c>rotate_half(x) = cat(-x2, x1)</c>.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        long half = x.shape[^1] / 2;
        var rotated = cat([-x.narrow(-1, half, half), x.narrow(-1, 0, half)], -1);
        return (x * cos + rotated * sin).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// <c>self_attn</c>: q / k / v / o projections, RMS norms over each head's width on queries and keys (<c>q_norm</c>,
/// <c>k_norm</c>; Qwen3 only) before the rotary embedding, grouped-query attention (each key / value head serves
/// heads / kv_heads consecutive query heads) with scale 1/√head_dim under an additive mask.
/// </summary>
internal sealed class Qwen3Attention : nn.Module
{
    private readonly Linear q_proj, k_proj, v_proj, o_proj;
    private readonly RMSNorm? q_norm, k_norm;
    private readonly int _heads, _kvHeads, _headDim;
    private readonly Func<Tensor, Tensor, Tensor, Tensor> _rotary;

    public Qwen3Attention(QwenDecoderSpec spec, Device? device, ScalarType? dtype) : base(nameof(Qwen3Attention))
    {
        _rotary = spec.Rotary;
        _heads = spec.Heads;
        _kvHeads = spec.KeyValueHeads;
        _headDim = spec.HeadDim;
        q_proj = new Linear(spec.HiddenSize, _heads * _headDim, hasBias: spec.QkvBias, device: device, dtype: dtype);
        k_proj = new Linear(spec.HiddenSize, _kvHeads * _headDim, hasBias: spec.QkvBias, device: device, dtype: dtype);
        v_proj = new Linear(spec.HiddenSize, _kvHeads * _headDim, hasBias: spec.QkvBias, device: device, dtype: dtype);
        o_proj = new Linear(_heads * _headDim, spec.HiddenSize, hasBias: spec.OutputBias, device: device, dtype: dtype);
        if (spec.QkNorm)
        {
            q_norm = new RMSNorm(_headDim, spec.RmsNormEps, device, dtype);
            k_norm = new RMSNorm(_headDim, spec.RmsNormEps, device, dtype);
        }
        RegisterComponents();
    }

    /// <summary>x [B, L, hidden]; cos / sin [1 or B, 1, L, head_dim]; bias [B, 1, L, L] (0 or the dtype's minimum).</summary>
    public Tensor forward(Tensor x, Tensor cos, Tensor sin, Tensor bias)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], l = x.shape[1];
        var q = q_proj.forward(x).view(b, l, _heads, _headDim);
        var k = k_proj.forward(x).view(b, l, _kvHeads, _headDim);
        if (q_norm is not null) q = q_norm.forward(q);
        if (k_norm is not null) k = k_norm.forward(k);
        q = q.transpose(1, 2);
        k = k.transpose(1, 2);
        var v = v_proj.forward(x).view(b, l, _kvHeads, _headDim).transpose(1, 2);
        q = _rotary(q, cos, sin);
        k = _rotary(k, cos, sin);
        if (_kvHeads != _heads)
        {
            // transformers' repeat_kv: query head h reads key / value head h / (heads / kv_heads).
            k = k.repeat_interleave(_heads / _kvHeads, dim: 1);
            v = v.repeat_interleave(_heads / _kvHeads, dim: 1);
        }
        var attended = nn.functional.scaled_dot_product_attention(q, k, v, bias);
        return o_proj.forward(attended.transpose(1, 2).reshape(b, l, _heads * _headDim)).MoveToOuterDisposeScope();
    }
}

/// <summary><c>mlp</c>: SwiGLU, <c>down_proj(act(gate_proj(x)) · up_proj(x))</c>, bias-free.</summary>
internal sealed class Qwen3MLP : nn.Module<Tensor, Tensor>
{
    private readonly Linear gate_proj, up_proj, down_proj;
    private readonly string _act;

    public Qwen3MLP(QwenDecoderSpec spec, Device? device, ScalarType? dtype) : base(nameof(Qwen3MLP))
    {
        _act = spec.HiddenAct;
        gate_proj = new Linear(spec.HiddenSize, spec.IntermediateSize, hasBias: false, device: device, dtype: dtype);
        up_proj = new Linear(spec.HiddenSize, spec.IntermediateSize, hasBias: false, device: device, dtype: dtype);
        down_proj = new Linear(spec.IntermediateSize, spec.HiddenSize, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = HfActivations.Apply(_act, gate_proj.forward(x)) * up_proj.forward(x);
        return down_proj.forward(h).MoveToOuterDisposeScope();
    }
}

/// <summary>One decoder layer (<c>layers.{i}</c>): pre-norm self-attention and pre-norm MLP, each with a residual. The MLP
/// is Qwen's unless another is given (GLM's fused gate-up one).</summary>
internal sealed class Qwen3DecoderLayer : nn.Module
{
    private readonly Qwen3Attention self_attn;
    private readonly nn.Module<Tensor, Tensor> mlp;
    private readonly RMSNorm input_layernorm, post_attention_layernorm;

    public Qwen3DecoderLayer(QwenDecoderSpec spec, Device? device, ScalarType? dtype, nn.Module<Tensor, Tensor>? mlp = null) : base(nameof(Qwen3DecoderLayer))
    {
        self_attn = new Qwen3Attention(spec, device, dtype);
        this.mlp = mlp ?? new Qwen3MLP(spec, device, dtype);
        input_layernorm = new RMSNorm(spec.HiddenSize, spec.RmsNormEps, device, dtype);
        post_attention_layernorm = new RMSNorm(spec.HiddenSize, spec.RmsNormEps, device, dtype);
        RegisterComponents();
    }

    public Tensor forward(Tensor x, Tensor cos, Tensor sin, Tensor bias)
    {
        using var scope = NewDisposeScope();
        var h = x + self_attn.forward(input_layernorm.forward(x), cos, sin, bias);
        return (h + mlp.forward(post_attention_layernorm.forward(h))).MoveToOuterDisposeScope();
    }
}

/// <summary>The decoder's causal self-attention mask (transformers' 4-D mask for eager / SDPA attention).</summary>
internal static class QwenCausalMask
{
    /// <summary>
    /// 0 where a query may attend (key position ≤ query position, key kept by <paramref name="mask"/>), the dtype's
    /// minimum elsewhere; [batch, 1, seq, seq].
    /// </summary>
    public static Tensor Bias(Tensor? mask, long batch, long length, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        var blocked = ones(length, length, dtype: ScalarType.Bool, device: device).triu(1).unsqueeze(0); // key after query
        if (mask is not null) blocked = blocked.logical_or(mask.eq(0).unsqueeze(1));
        blocked = blocked.expand(batch, length, length).unsqueeze(1);
        var bias = zeros(batch, 1, length, length, dtype: dtype, device: device).masked_fill(blocked, MinValue(dtype));
        return bias.MoveToOuterDisposeScope();
    }

    /// <summary><c>torch.finfo(dtype).min</c>.</summary>
    internal static double MinValue(ScalarType dtype) => dtype switch
    {
        ScalarType.Float16 => -65504.0,
        ScalarType.BFloat16 => -3.3895313892515355e38,
        ScalarType.Float64 => double.MinValue,
        _ => float.MinValue,
    };
}
