using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// GLM's rotary embedding (transformers' <c>apply_rotary_pos_emb</c> of modeling_glm): only the first rotary_dim values of
/// each head rotate, as interleaved pairs (x0, x1), (x2, x3), ... each by its own frequency; the rest pass unchanged.
/// </summary>
internal static class GlmRotary
{
    /// <summary>
    /// Rotates <paramref name="x"/> [B, H, L, head_dim] with <paramref name="cos"/> / <paramref name="sin"/> [1, 1, L,
    /// rotary_dim] as Qwen3Rotary.CosSin makes them (each frequency's angle in both halves): the first half's values are
    /// repeated pairwise, then <c>x · cos + rotate_half(x) · sin</c> with GLM's <c>rotate_half(x) = stack(-x_odd, x_even)</c>.
    /// </summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        long rotary = cos.shape[^1], headDim = x.shape[^1];
        var c = cos.narrow(-1, 0, rotary / 2).repeat_interleave(2, dim: -1, output_size: rotary);
        var s = sin.narrow(-1, 0, rotary / 2).repeat_interleave(2, dim: -1, output_size: rotary);
        var rot = x.narrow(-1, 0, rotary);
        long[] pairs = [.. rot.shape[..^1], rotary / 2, 2];
        var parts = rot.reshape(pairs).unbind(-1);
        var rotated = stack([-parts[1], parts[0]], -1).flatten(-2);
        var embedded = rot * c + rotated * s;
        var result = rotary == headDim ? embedded : cat([embedded, x.narrow(-1, rotary, headDim - rotary)], -1);
        return result.MoveToOuterDisposeScope();
    }
}

/// <summary>
/// <c>self_attn</c>: q / k / v projections (biased when attention_bias), o_proj without bias, GLM's partial interleaved
/// rotary embedding on queries and keys, grouped-query attention with scale 1/√head_dim under an additive mask.
/// </summary>
internal sealed class GlmAttention : nn.Module
{
    private readonly Linear q_proj, k_proj, v_proj, o_proj;
    private readonly int _heads, _kvHeads, _headDim;

    public GlmAttention(GlmConfig config, Device? device, ScalarType? dtype) : base(nameof(GlmAttention))
    {
        _heads = config.NumAttentionHeads;
        _kvHeads = config.KeyValueHeads;
        _headDim = config.HeadDim;
        q_proj = new Linear(config.HiddenSize, _heads * _headDim, hasBias: config.AttentionBias, device: device, dtype: dtype);
        k_proj = new Linear(config.HiddenSize, _kvHeads * _headDim, hasBias: config.AttentionBias, device: device, dtype: dtype);
        v_proj = new Linear(config.HiddenSize, _kvHeads * _headDim, hasBias: config.AttentionBias, device: device, dtype: dtype);
        o_proj = new Linear(_heads * _headDim, config.HiddenSize, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>x [B, L, hidden]; cos / sin [1, 1, L, rotary_dim]; bias [B, 1, L, L] (0 or the dtype's minimum).</summary>
    public Tensor forward(Tensor x, Tensor cos, Tensor sin, Tensor bias)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], l = x.shape[1];
        var q = GlmRotary.Apply(q_proj.forward(x).view(b, l, _heads, _headDim).transpose(1, 2), cos, sin);
        var k = GlmRotary.Apply(k_proj.forward(x).view(b, l, _kvHeads, _headDim).transpose(1, 2), cos, sin);
        var v = v_proj.forward(x).view(b, l, _kvHeads, _headDim).transpose(1, 2);
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

/// <summary><c>mlp</c>: one fused <c>gate_up_proj</c> (gate first, then up), <c>down_proj(up · act(gate))</c>, bias-free.</summary>
internal sealed class GlmMLP : nn.Module<Tensor, Tensor>
{
    private readonly Linear gate_up_proj, down_proj;
    private readonly string _act;

    public GlmMLP(GlmConfig config, Device? device, ScalarType? dtype) : base(nameof(GlmMLP))
    {
        _act = config.HiddenAct;
        gate_up_proj = new Linear(config.HiddenSize, 2L * config.IntermediateSize, hasBias: false, device: device, dtype: dtype);
        down_proj = new Linear(config.IntermediateSize, config.HiddenSize, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var halves = gate_up_proj.forward(x).chunk(2, -1);
        var h = halves[1] * HfActivations.Apply(_act, halves[0]);
        return down_proj.forward(h).MoveToOuterDisposeScope();
    }
}

/// <summary>One decoder layer (<c>layers.{i}</c>): pre-norm self-attention and pre-norm MLP, each with a residual.</summary>
internal sealed class GlmDecoderLayer : nn.Module
{
    private readonly GlmAttention self_attn;
    private readonly GlmMLP mlp;
    private readonly RMSNorm input_layernorm, post_attention_layernorm;

    public GlmDecoderLayer(GlmConfig config, Device? device, ScalarType? dtype) : base(nameof(GlmDecoderLayer))
    {
        self_attn = new GlmAttention(config, device, dtype);
        mlp = new GlmMLP(config, device, dtype);
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
