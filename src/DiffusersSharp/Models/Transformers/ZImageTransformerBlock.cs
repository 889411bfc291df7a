using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// One Z-Image block (diffusers <c>ZImageTransformerBlock</c>), used by the noise refiner, the context refiner and the
/// main layers: pre- and post-RMSNormed self-attention and SwiGLU feed-forward, each added to the input. With
/// <c>modulation</c> (every block but the context refiner's) the timestep embedding gives, through one linear layer
/// (no activation before it), a scale for each pre-norm (<c>1 + scale</c>) and a tanh gate for each branch.
/// </summary>
public sealed class ZImageTransformerBlock : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly ZImageAttention attention;
    private readonly ZImageFeedForward feed_forward;
    private readonly RMSNorm attention_norm1, ffn_norm1, attention_norm2, ffn_norm2;
    private readonly ModuleList<Linear>? adaLN_modulation;
#pragma warning restore IDE1006

    /// <summary>Creates a block of <paramref name="config"/>'s widths, with the timestep modulation or without.</summary>
    public ZImageTransformerBlock(ZImageTransformer2DModelConfig config, bool modulation, Device? device = null, ScalarType? dtype = null)
        : base(nameof(ZImageTransformerBlock))
    {
        ArgumentNullException.ThrowIfNull(config);
        int dim = config.Dim;
        attention = new ZImageAttention(dim, config.NHeads, config.HeadDim, config.QkNorm, device, dtype);
        feed_forward = new ZImageFeedForward(dim, config.FeedForwardDim, device, dtype);
        attention_norm1 = new RMSNorm(dim, config.NormEps, device, dtype);
        ffn_norm1 = new RMSNorm(dim, config.NormEps, device, dtype);
        attention_norm2 = new RMSNorm(dim, config.NormEps, device, dtype);
        ffn_norm2 = new RMSNorm(dim, config.NormEps, device, dtype);
        if (modulation)
            adaLN_modulation = new ModuleList<Linear>(new Linear(config.AdaLnEmbedDim, 4L * dim, hasBias: true, device: device, dtype: dtype));
        RegisterComponents();
    }

    /// <summary>Whether the block is modulated by the timestep embedding.</summary>
    public bool Modulated => adaLN_modulation is not null;

    /// <summary>
    /// Runs the block on <paramref name="x"/> [B, S, dim]: <paramref name="mask"/> [B, S] (true: a real token, a key
    /// attention may use), <paramref name="rotary"/> (cos, sin) [B, S, head_dim] of each token's position, and for a
    /// modulated block the timestep embedding <paramref name="adaln"/> [B, min(dim, 256)].
    /// </summary>
    /// <exception cref="ArgumentException">A modulated block got no embedding.</exception>
    public Tensor forward(Tensor x, Tensor mask, (Tensor Cos, Tensor Sin) rotary, Tensor? adaln)
    {
        using var scope = NewDisposeScope();
        Tensor result;
        if (adaLN_modulation is not null)
        {
            if (adaln is null) throw new ArgumentException("A modulated Z-Image block needs the timestep embedding.", nameof(adaln));
            var chunks = adaLN_modulation[0].forward(adaln).unsqueeze(1).chunk(4, 2);
            Tensor scaleMsa = chunks[0] + 1.0, gateMsa = chunks[1].tanh(), scaleMlp = chunks[2] + 1.0, gateMlp = chunks[3].tanh();
            var attnOut = attention.forward(attention_norm1.forward(x) * scaleMsa, mask, rotary);
            x = x + gateMsa * attention_norm2.forward(attnOut);
            result = x + gateMlp * ffn_norm2.forward(feed_forward.forward(ffn_norm1.forward(x) * scaleMlp));
        }
        else
        {
            var attnOut = attention.forward(attention_norm1.forward(x), mask, rotary);
            x = x + attention_norm2.forward(attnOut);
            result = x + ffn_norm2.forward(feed_forward.forward(ffn_norm1.forward(x)));
        }
        return result.MoveToOuterDisposeScope();
    }
}

/// <summary>
/// The self-attention of a Z-Image block (diffusers <c>Attention</c> with <c>ZSingleStreamAttnProcessor</c>): bias-free
/// q, k, v, per-head RMSNorm on q and k (eps 1e-5, <c>qk_norm</c>), the rotary embedding of each token's position on q and
/// k (complex rotation of adjacent pairs, in float32), <c>scaled_dot_product_attention</c> (scale 1/√head_dim) under the
/// key mask, and a bias-free <c>to_out.0</c>.
/// </summary>
public sealed class ZImageAttention : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear to_q, to_k, to_v;
    private readonly ModuleList<nn.Module<Tensor, Tensor>> to_out;
    private readonly RMSNorm? norm_q, norm_k;
#pragma warning restore IDE1006
    private readonly int _heads;
    private readonly int _headDim;

    /// <summary>Creates the attention of width <paramref name="dim"/> with <paramref name="heads"/> heads of <paramref name="headDim"/>.</summary>
    public ZImageAttention(int dim, int heads, int headDim, bool qkNorm, Device? device = null, ScalarType? dtype = null)
        : base(nameof(ZImageAttention))
    {
        _heads = heads;
        _headDim = headDim;
        long inner = (long)heads * headDim;
        to_q = new Linear(dim, inner, hasBias: false, device: device, dtype: dtype);
        to_k = new Linear(dim, inner, hasBias: false, device: device, dtype: dtype);
        to_v = new Linear(dim, inner, hasBias: false, device: device, dtype: dtype);
        to_out = new ModuleList<nn.Module<Tensor, Tensor>>(new Linear(inner, dim, hasBias: false, device: device, dtype: dtype), nn.Dropout(0.0));
        if (qkNorm)
        {
            norm_q = new RMSNorm(headDim, 1e-5, device, dtype);
            norm_k = new RMSNorm(headDim, 1e-5, device, dtype);
        }
        RegisterComponents();
    }

    /// <summary>Attends over <paramref name="x"/> [B, S, dim] with the key mask [B, S] and the rotary (cos, sin) [B, S, head_dim].</summary>
    public Tensor forward(Tensor x, Tensor mask, (Tensor Cos, Tensor Sin) rotary)
    {
        using var scope = NewDisposeScope();
        long batch = x.shape[0], length = x.shape[1];
        // diffusers unflattens to [B, S, heads, head_dim], norms and rotates there, and attends in [B, heads, S, head_dim].
        var query = to_q.forward(x).view(batch, length, _heads, _headDim);
        var key = to_k.forward(x).view(batch, length, _heads, _headDim);
        var value = to_v.forward(x).view(batch, length, _heads, _headDim);
        if (norm_q is not null) query = norm_q.forward(query);
        if (norm_k is not null) key = norm_k.forward(key);
        query = FluxPosEmbed.Apply(query.transpose(1, 2), rotary);
        key = FluxPosEmbed.Apply(key.transpose(1, 2), rotary);
        var attended = nn.functional.scaled_dot_product_attention(query, key, value.transpose(1, 2), mask.view(batch, 1, 1, length));
        attended = attended.transpose(1, 2).reshape(batch, length, (long)_heads * _headDim).to(query.dtype);
        return to_out[0].forward(attended).MoveToOuterDisposeScope();
    }
}

/// <summary>The SwiGLU feed-forward of a Z-Image block (diffusers' <c>FeedForward</c> of transformer_z_image.py): <c>w2(silu(w1 x) · w3 x)</c>, bias-free.</summary>
public sealed class ZImageFeedForward : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear w1, w2, w3;
#pragma warning restore IDE1006

    /// <summary>Creates the layer of width <paramref name="dim"/> and hidden width <paramref name="hiddenDim"/>.</summary>
    public ZImageFeedForward(int dim, int hiddenDim, Device? device = null, ScalarType? dtype = null) : base(nameof(ZImageFeedForward))
    {
        w1 = new Linear(dim, hiddenDim, hasBias: false, device: device, dtype: dtype);
        w2 = new Linear(hiddenDim, dim, hasBias: false, device: device, dtype: dtype);
        w3 = new Linear(dim, hiddenDim, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return w2.forward(nn.functional.silu(w1.forward(x)) * w3.forward(x)).MoveToOuterDisposeScope();
    }
}
