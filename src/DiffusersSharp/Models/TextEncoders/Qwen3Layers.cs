using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.TextEncoders;

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
        using var scope = NewDisposeScope();
        var exponent = arange(0, headDim, 2, dtype: ScalarType.Int64, device: device).to(ScalarType.Float32) / (double)headDim;
        // Python's `1.0 / (base ** x)`: torch.pow(scalar, tensor), then Tensor.__rtruediv__, which is reciprocal() * 1.0.
        var invFreq = full_like(exponent, theta).pow(exponent).reciprocal();
        var positions = arange(length, dtype: ScalarType.Int64, device: device).to(ScalarType.Float32);
        var freqs = positions.unsqueeze(1) * invFreq.unsqueeze(0); // [length, head_dim / 2]: one product each, as the matmul
        var emb = cat([freqs, freqs], -1);
        var cos = emb.cos().to(dtype).view(1, 1, length, headDim);
        var sin = emb.sin().to(dtype).view(1, 1, length, headDim);
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
/// <c>k_norm</c>) before the rotary embedding, grouped-query attention (each key / value head serves
/// heads / kv_heads consecutive query heads) with scale 1/√head_dim under an additive mask.
/// </summary>
internal sealed class Qwen3Attention : nn.Module
{
    private readonly Linear q_proj, k_proj, v_proj, o_proj;
    private readonly RMSNorm q_norm, k_norm;
    private readonly int _heads, _kvHeads, _headDim;

    public Qwen3Attention(Qwen3Config config, Device? device, ScalarType? dtype) : base(nameof(Qwen3Attention))
    {
        _heads = config.NumAttentionHeads;
        _kvHeads = config.KeyValueHeads;
        _headDim = config.HeadDim;
        bool bias = config.AttentionBias;
        q_proj = new Linear(config.HiddenSize, _heads * _headDim, hasBias: bias, device: device, dtype: dtype);
        k_proj = new Linear(config.HiddenSize, _kvHeads * _headDim, hasBias: bias, device: device, dtype: dtype);
        v_proj = new Linear(config.HiddenSize, _kvHeads * _headDim, hasBias: bias, device: device, dtype: dtype);
        o_proj = new Linear(_heads * _headDim, config.HiddenSize, hasBias: bias, device: device, dtype: dtype);
        q_norm = new RMSNorm(_headDim, config.RmsNormEps, device, dtype);
        k_norm = new RMSNorm(_headDim, config.RmsNormEps, device, dtype);
        RegisterComponents();
    }

    /// <summary>x [B, L, hidden]; cos / sin [1, 1, L, head_dim]; bias [B, 1, L, L] (0 or the dtype's minimum).</summary>
    public Tensor forward(Tensor x, Tensor cos, Tensor sin, Tensor bias)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], l = x.shape[1];
        var q = q_norm.forward(q_proj.forward(x).view(b, l, _heads, _headDim)).transpose(1, 2);
        var k = k_norm.forward(k_proj.forward(x).view(b, l, _kvHeads, _headDim)).transpose(1, 2);
        var v = v_proj.forward(x).view(b, l, _kvHeads, _headDim).transpose(1, 2);
        q = Qwen3Rotary.Apply(q, cos, sin);
        k = Qwen3Rotary.Apply(k, cos, sin);
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

    public Qwen3MLP(Qwen3Config config, Device? device, ScalarType? dtype) : base(nameof(Qwen3MLP))
    {
        _act = config.HiddenAct;
        gate_proj = new Linear(config.HiddenSize, config.IntermediateSize, hasBias: false, device: device, dtype: dtype);
        up_proj = new Linear(config.HiddenSize, config.IntermediateSize, hasBias: false, device: device, dtype: dtype);
        down_proj = new Linear(config.IntermediateSize, config.HiddenSize, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = HfActivations.Apply(_act, gate_proj.forward(x)) * up_proj.forward(x);
        return down_proj.forward(h).MoveToOuterDisposeScope();
    }
}

/// <summary>One decoder layer (<c>layers.{i}</c>): pre-norm self-attention and pre-norm MLP, each with a residual.</summary>
internal sealed class Qwen3DecoderLayer : nn.Module
{
    private readonly Qwen3Attention self_attn;
    private readonly Qwen3MLP mlp;
    private readonly RMSNorm input_layernorm, post_attention_layernorm;

    public Qwen3DecoderLayer(Qwen3Config config, Device? device, ScalarType? dtype) : base(nameof(Qwen3DecoderLayer))
    {
        self_attn = new Qwen3Attention(config, device, dtype);
        mlp = new Qwen3MLP(config, device, dtype);
        input_layernorm = new RMSNorm(config.HiddenSize, config.RmsNormEps, device, dtype);
        post_attention_layernorm = new RMSNorm(config.HiddenSize, config.RmsNormEps, device, dtype);
        RegisterComponents();
    }

    public Tensor forward(Tensor x, Tensor cos, Tensor sin, Tensor bias)
    {
        using var scope = NewDisposeScope();
        var h = x + self_attn.forward(input_layernorm.forward(x), cos, sin, bias);
        return (h + mlp.forward(post_attention_layernorm.forward(h))).MoveToOuterDisposeScope();
    }
}
