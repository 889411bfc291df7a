using DiffusersSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// <c>self_attn</c> (transformers' <c>Gemma2Attention</c> with its eager attention, the one transformers runs Gemma2 with
/// by default): q / k / v / o projections, rotary embeddings on queries and keys, grouped-query attention (query head h
/// reads key / value head h / (heads / kv_heads)), logits scaled by <c>query_pre_attn_scalar^-0.5</c> and soft-capped
/// as <c>tanh(x / cap) · cap</c> before the additive mask, softmax in float32 cast back to the activations' dtype.
/// Written out rather than with scaled_dot_product_attention, which has no soft-capping.
/// </summary>
internal sealed class Gemma2Attention : nn.Module
{
    private readonly Linear q_proj, k_proj, v_proj, o_proj;
    private readonly int _heads, _kvHeads, _headDim;
    private readonly double _scaling;
    private readonly double? _softcap;

    public Gemma2Attention(Gemma2Config config, Device? device, ScalarType? dtype) : base(nameof(Gemma2Attention))
    {
        _heads = config.NumAttentionHeads;
        _kvHeads = config.NumKeyValueHeads;
        _headDim = config.HeadDim;
        // Python's query_pre_attn_scalar**-0.5, a double that multiplies the logits as a scalar.
        _scaling = Math.Pow(config.QueryPreAttnScalar, -0.5);
        _softcap = config.AttnLogitSoftcapping;
        bool bias = config.AttentionBias;
        q_proj = new Linear(config.HiddenSize, _heads * _headDim, hasBias: bias, device: device, dtype: dtype);
        k_proj = new Linear(config.HiddenSize, _kvHeads * _headDim, hasBias: bias, device: device, dtype: dtype);
        v_proj = new Linear(config.HiddenSize, _kvHeads * _headDim, hasBias: bias, device: device, dtype: dtype);
        o_proj = new Linear(_heads * _headDim, config.HiddenSize, hasBias: bias, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>x [B, L, hidden]; cos / sin [1, 1, L, head_dim]; bias [B, 1, L, L] (0 or the dtype's minimum).</summary>
    public Tensor forward(Tensor x, Tensor cos, Tensor sin, Tensor bias)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], l = x.shape[1];
        var q = q_proj.forward(x).view(b, l, _heads, _headDim).transpose(1, 2);
        var k = k_proj.forward(x).view(b, l, _kvHeads, _headDim).transpose(1, 2);
        var v = v_proj.forward(x).view(b, l, _kvHeads, _headDim).transpose(1, 2);
        q = Qwen3Rotary.Apply(q, cos, sin);
        k = Qwen3Rotary.Apply(k, cos, sin);
        if (_kvHeads != _heads)
        {
            // transformers' repeat_kv.
            k = k.repeat_interleave(_heads / _kvHeads, dim: 1);
            v = v.repeat_interleave(_heads / _kvHeads, dim: 1);
        }
        var logits = q.matmul(k.transpose(2, 3)).mul_(_scaling);
        if (_softcap is { } cap) logits = logits.div_(cap).tanh_().mul_(cap);
        logits = logits.add_(bias);
        var weights = logits.softmax(-1, ScalarType.Float32).to(x.dtype);
        var attended = weights.matmul(v).transpose(1, 2).reshape(b, l, _heads * _headDim);
        return o_proj.forward(attended).MoveToOuterDisposeScope();
    }
}

/// <summary><c>mlp</c> (transformers' <c>Gemma2MLP</c>): GeGLU, <c>down_proj(act(gate_proj(x)) · up_proj(x))</c>, bias-free.</summary>
internal sealed class Gemma2MLP : nn.Module<Tensor, Tensor>
{
    private readonly Linear gate_proj, up_proj, down_proj;
    private readonly string _act;

    public Gemma2MLP(Gemma2Config config, Device? device, ScalarType? dtype) : base(nameof(Gemma2MLP))
    {
        _act = config.HiddenActivation;
        gate_proj = new Linear(config.HiddenSize, config.IntermediateSize, hasBias: false, device: device, dtype: dtype);
        up_proj = new Linear(config.HiddenSize, config.IntermediateSize, hasBias: false, device: device, dtype: dtype);
        down_proj = new Linear(config.IntermediateSize, config.HiddenSize, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = HfActivations.Apply(_act, gate_proj.forward(x)).mul_(up_proj.forward(x));
        return down_proj.forward(h).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// One decoder layer (<c>layers.{i}</c>, transformers' <c>Gemma2DecoderLayer</c>): self-attention between a pre-norm
/// (<c>input_layernorm</c>) and a post-norm (<c>post_attention_layernorm</c>), then the MLP between
/// <c>pre_feedforward_layernorm</c> and <c>post_feedforward_layernorm</c>, each added to the residual stream. Every norm
/// is Gemma's (1 + weight) RMS norm.
/// </summary>
internal sealed class Gemma2DecoderLayer : nn.Module
{
    private readonly Gemma2Attention self_attn;
    private readonly Gemma2MLP mlp;
    private readonly RMSNorm input_layernorm, post_attention_layernorm, pre_feedforward_layernorm, post_feedforward_layernorm;

    public Gemma2DecoderLayer(Gemma2Config config, Device? device, ScalarType? dtype) : base(nameof(Gemma2DecoderLayer))
    {
        self_attn = new Gemma2Attention(config, device, dtype);
        mlp = new Gemma2MLP(config, device, dtype);
        input_layernorm = RMSNorm.Gemma(config.HiddenSize, config.RmsNormEps, device, dtype);
        post_attention_layernorm = RMSNorm.Gemma(config.HiddenSize, config.RmsNormEps, device, dtype);
        pre_feedforward_layernorm = RMSNorm.Gemma(config.HiddenSize, config.RmsNormEps, device, dtype);
        post_feedforward_layernorm = RMSNorm.Gemma(config.HiddenSize, config.RmsNormEps, device, dtype);
        RegisterComponents();
    }

    /// <summary>x [B, L, hidden]; bias: this layer's mask (the sliding-window one for sliding layers).</summary>
    public Tensor forward(Tensor x, Tensor cos, Tensor sin, Tensor bias)
    {
        using var scope = NewDisposeScope();
        var h = x + post_attention_layernorm.forward(self_attn.forward(input_layernorm.forward(x), cos, sin, bias));
        var ff = post_feedforward_layernorm.forward(mlp.forward(pre_feedforward_layernorm.forward(h)));
        return h.add_(ff).MoveToOuterDisposeScope();
    }
}

/// <summary>The masks of Gemma2's two kinds of layers (transformers' 4-D additive masks for eager attention).</summary>
internal static class Gemma2Mask
{
    /// <summary>
    /// The sliding-window layers' mask: <paramref name="causal"/> (from <see cref="QwenCausalMask.Bias"/>, the same
    /// causal + padding mask transformers builds for Gemma2) with every key at least <paramref name="window"/> positions
    /// before its query also set to the dtype's minimum, as <c>torch.where(tril(ones, -window), min, mask)</c>. A query
    /// whose every key is then masked (padding beyond the window) softmaxes equal minima: transformers averages all keys.
    /// </summary>
    public static Tensor SlidingWindow(Tensor causal, int window)
    {
        using var scope = NewDisposeScope();
        long length = causal.shape[^1];
        var far = ones(length, length, dtype: ScalarType.Bool, device: causal.device).tril(-window);
        return causal.masked_fill(far, QwenCausalMask.MinValue(causal.dtype)).MoveToOuterDisposeScope();
    }
}
