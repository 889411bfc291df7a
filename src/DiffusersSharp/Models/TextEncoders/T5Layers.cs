using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// T5's RMS norm (no mean subtraction, no bias): the variance is taken in float32; the normalised values are cast
/// back to the weight's type when that is fp16/bf16, as transformers does.
/// </summary>
internal sealed class T5LayerNorm : nn.Module<Tensor, Tensor>
{
    private Parameter weight;
    private readonly double _eps;

    public T5LayerNorm(long size, double eps, Device? device, ScalarType? dtype) : base(nameof(T5LayerNorm))
    {
        _eps = eps;
        weight = new Parameter(ones(new[] { size }, dtype: dtype ?? ScalarType.Float32, device: device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var variance = x.to(ScalarType.Float32).pow(2).mean(new long[] { -1 }, keepdim: true);
        var h = x * (variance + _eps).rsqrt();
        if (weight.dtype is ScalarType.Float16 or ScalarType.BFloat16) h = h.to(weight.dtype);
        return (weight * h).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// T5 self-attention: bias-free q/k/v/o, NO 1/sqrt(d_kv) scaling, an additive relative-position bias, softmax in
/// float32. In T5 only block 0 owns <c>relative_attention_bias</c> and its bias is shared by every block; in UMT5 every
/// block owns one and uses its own (transformers' UMT5Attention, built with has_relative_attention_bias=True everywhere).
/// </summary>
internal sealed class T5Attention : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly Linear q, k, v, o;
    private readonly Embedding? relative_attention_bias;
    private readonly long _heads, _dkv;
    private readonly int _buckets, _maxDistance;

    public T5Attention(T5Config config, bool hasRelativeAttentionBias, Device? device, ScalarType? dtype) : base(nameof(T5Attention))
    {
        _heads = config.NumHeads;
        _dkv = config.DKv;
        _buckets = config.RelativeAttentionNumBuckets;
        _maxDistance = config.RelativeAttentionMaxDistance;
        long inner = _heads * _dkv;
        q = new Linear(config.DModel, inner, hasBias: false, device: device, dtype: dtype);
        k = new Linear(config.DModel, inner, hasBias: false, device: device, dtype: dtype);
        v = new Linear(config.DModel, inner, hasBias: false, device: device, dtype: dtype);
        o = new Linear(inner, config.DModel, hasBias: false, device: device, dtype: dtype);
        if (hasRelativeAttentionBias)
            relative_attention_bias = nn.Embedding(config.RelativeAttentionNumBuckets, config.NumHeads, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>The dtype of the bias table (the model's).</summary>
    public ScalarType BiasType => (relative_attention_bias ?? throw new InvalidOperationException("This T5 block holds no relative_attention_bias.")).weight!.dtype;

    /// <summary>[1, heads, length, length] bias from this block's learned bucket table (T5: block 0 only; UMT5: every block).</summary>
    public Tensor ComputeBias(long length, Device device)
    {
        if (relative_attention_bias is null) throw new InvalidOperationException("This T5 block holds no relative_attention_bias (in T5 only the first one does).");
        using var scope = NewDisposeScope();
        var context = arange(length, dtype: ScalarType.Int64, device: device).unsqueeze(1);
        var memory = arange(length, dtype: ScalarType.Int64, device: device).unsqueeze(0);
        var buckets = Bucket(memory - context, _buckets, _maxDistance);
        var values = relative_attention_bias.forward(buckets); // [q, k, heads]
        return values.permute(2, 0, 1).unsqueeze(0).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// transformers' bidirectional <c>_relative_position_bucket</c>: half the buckets per direction; exact buckets for
    /// distances below a quarter of the buckets, then log-spaced up to max_distance (float32 arithmetic, truncated).
    /// </summary>
    internal static Tensor Bucket(Tensor relative, int numBuckets, int maxDistance)
    {
        using var scope = NewDisposeScope();
        long half = numBuckets / 2;
        var result = relative.gt(0).to(ScalarType.Int64) * half;
        var distance = relative.abs();
        long maxExact = half / 2;
        var isSmall = distance.lt(maxExact);
        var scaled = (distance.to(ScalarType.Float32) / (double)maxExact).log() / Math.Log(maxDistance / (double)maxExact) * (double)(half - maxExact);
        var large = scaled.to(ScalarType.Int64) + maxExact;
        large = minimum(large, full_like(large, half - 1));
        return (result + where(isSmall, distance, large)).MoveToOuterDisposeScope();
    }

    public override Tensor forward(Tensor x, Tensor positionBias)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], s = x.shape[1];
        Tensor Heads(Linear proj) => proj.forward(x).view(b, -1, _heads, _dkv).transpose(1, 2);
        var query = Heads(q);
        var key = Heads(k);
        var value = Heads(v);
        var scores = matmul(query, key.transpose(3, 2));
        scores = scores + positionBias.to(scores.dtype);
        var weights = scores.to(ScalarType.Float32).softmax(-1).to(scores.dtype);
        var attn = matmul(weights, value).transpose(1, 2).contiguous().view(b, s, _heads * _dkv);
        return o.forward(attn).MoveToOuterDisposeScope();
    }
}

/// <summary>The feed-forward: gated (wi_0, wi_1) or plain (wi), then wo; input to wo is cast to wo's dtype.</summary>
internal sealed class T5DenseActDense : nn.Module<Tensor, Tensor>
{
    private readonly Linear? wi, wi_0, wi_1;
    private readonly Linear wo;
    private readonly string _act;

    public T5DenseActDense(T5Config config, Device? device, ScalarType? dtype) : base(nameof(T5DenseActDense))
    {
        _act = config.ActivationName;
        if (config.Gated)
        {
            wi_0 = new Linear(config.DModel, config.DFf, hasBias: false, device: device, dtype: dtype);
            wi_1 = new Linear(config.DModel, config.DFf, hasBias: false, device: device, dtype: dtype);
        }
        else
        {
            wi = new Linear(config.DModel, config.DFf, hasBias: false, device: device, dtype: dtype);
        }
        wo = new Linear(config.DFf, config.DModel, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    public ScalarType OutputWeightType => wo.weight!.dtype;

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = wi is not null
            ? HfActivations.Apply(_act, wi.forward(x))
            : HfActivations.Apply(_act, wi_0!.forward(x)) * wi_1!.forward(x);
        // transformers keeps wo in float32 for fp16 models (_keep_in_fp32_modules), so the input follows wo's type.
        if (h.dtype != wo.weight!.dtype) h = h.to(wo.weight.dtype);
        return wo.forward(h).MoveToOuterDisposeScope();
    }
}

/// <summary><c>layer.0</c>: x + SelfAttention(layer_norm(x)).</summary>
internal sealed class T5LayerSelfAttention : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly T5Attention SelfAttention;
    private readonly T5LayerNorm layer_norm;

    public T5LayerSelfAttention(T5Config config, bool hasRelativeAttentionBias, Device? device, ScalarType? dtype) : base(nameof(T5LayerSelfAttention))
    {
        SelfAttention = new T5Attention(config, hasRelativeAttentionBias, device, dtype);
        layer_norm = new T5LayerNorm(config.DModel, config.LayerNormEpsilon, device, dtype);
        RegisterComponents();
    }

    public T5Attention Attention => SelfAttention;

    public override Tensor forward(Tensor x, Tensor positionBias)
    {
        using var scope = NewDisposeScope();
        return (x + SelfAttention.forward(layer_norm.forward(x), positionBias)).MoveToOuterDisposeScope();
    }
}

/// <summary><c>layer.1</c>: x + DenseReluDense(layer_norm(x)).</summary>
internal sealed class T5LayerFF : nn.Module<Tensor, Tensor>
{
    private readonly T5DenseActDense DenseReluDense;
    private readonly T5LayerNorm layer_norm;

    public T5LayerFF(T5Config config, Device? device, ScalarType? dtype) : base(nameof(T5LayerFF))
    {
        DenseReluDense = new T5DenseActDense(config, device, dtype);
        layer_norm = new T5LayerNorm(config.DModel, config.LayerNormEpsilon, device, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return (x + DenseReluDense.forward(layer_norm.forward(x))).MoveToOuterDisposeScope();
    }
}

/// <summary>One encoder block (<c>encoder.block.{i}</c>): self-attention layer then feed-forward layer.</summary>
internal sealed class T5Block : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly ModuleList<nn.Module> layer;

    public T5Block(T5Config config, bool hasRelativeAttentionBias, Device? device, ScalarType? dtype) : base(nameof(T5Block))
    {
        layer = new ModuleList<nn.Module>(
            new T5LayerSelfAttention(config, hasRelativeAttentionBias, device, dtype),
            new T5LayerFF(config, device, dtype));
        RegisterComponents();
    }

    public T5LayerSelfAttention SelfAttentionLayer => (T5LayerSelfAttention)layer[0];

    public override Tensor forward(Tensor x, Tensor positionBias)
    {
        using var scope = NewDisposeScope();
        var h = ClampFp16(SelfAttentionLayer.forward(x, positionBias));
        h = ClampFp16(((T5LayerFF)layer[1]).forward(h));
        return h.MoveToOuterDisposeScope();
    }

    /// <summary>transformers clamps fp16 activations to the finite range (65504, or 64504 once any value is inf).</summary>
    private static Tensor ClampFp16(Tensor h)
    {
        if (h.dtype != ScalarType.Float16) return h;
        double limit = h.isinf().any().item<bool>() ? 65504.0 - 1000.0 : 65504.0;
        return h.clamp(-limit, limit);
    }
}

/// <summary>
/// The encoder stack (<c>encoder.*</c>): tied token embedding, blocks, final RMS norm. T5 computes the position bias once,
/// from block 0's table; UMT5 (<c>relativeBiasInEveryBlock</c>) gives every block its own table and bias.
/// </summary>
internal sealed class T5Stack : nn.Module<Tensor, Tensor>
{
    private readonly Embedding embed_tokens;
    private readonly ModuleList<T5Block> block;
    private readonly T5LayerNorm final_layer_norm;
    private readonly bool _biasInEveryBlock;

    public T5Stack(T5Config config, Embedding embedTokens, Device? device, ScalarType? dtype, bool relativeBiasInEveryBlock = false) : base(nameof(T5Stack))
    {
        _biasInEveryBlock = relativeBiasInEveryBlock;
        embed_tokens = embedTokens;
        block = new ModuleList<T5Block>();
        for (int i = 0; i < config.NumLayers; i++) block.Add(new T5Block(config, i == 0 || relativeBiasInEveryBlock, device, dtype));
        final_layer_norm = new T5LayerNorm(config.DModel, config.LayerNormEpsilon, device, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor ids) => forward(ids, null);

    /// <summary>
    /// Encodes <paramref name="ids"/>; with <paramref name="attentionMask"/> [B, S] (1 keeps a key, 0 drops it) the bias of
    /// every layer gets <c>(1 - mask) · finfo(dtype).min</c> on the dropped keys, as transformers' extended attention mask.
    /// </summary>
    public Tensor forward(Tensor ids, Tensor? attentionMask)
    {
        using var scope = NewDisposeScope();
        var h = embed_tokens.forward(ids);
        long length = ids.shape[1];
        // Without a mask (SD3, Flux) the encoder attends to padding, exactly as transformers does without one.
        Tensor? masked = null;
        if (attentionMask is not null)
        {
            double min = h.dtype switch
            {
                ScalarType.Float16 => -65504.0,
                ScalarType.BFloat16 => -3.3895313892515355e38,
                _ => float.MinValue,
            };
            var dtype = block[0].SelfAttentionLayer.Attention.BiasType;
            masked = ((1 - attentionMask.to(dtype)).unsqueeze(1).unsqueeze(1) * min).to(dtype);
        }
        Tensor WithMask(Tensor bias) => masked is null ? bias : bias + masked;
        var shared = _biasInEveryBlock ? null : WithMask(block[0].SelfAttentionLayer.Attention.ComputeBias(length, ids.device));
        foreach (var b in block)
        {
            var bias = shared ?? WithMask(b.SelfAttentionLayer.Attention.ComputeBias(length, ids.device));
            var next = b.forward(h, bias);
            h.Dispose();
            if (shared is null) bias.Dispose();
            h = next;
        }
        return final_layer_norm.forward(h).MoveToOuterDisposeScope();
    }
}
