using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// diffusers' <c>BasicTransformerBlock</c> in two of its norm types.
/// <para><c>norm_type="layer_norm"</c> (the SD / SDXL UNets): <c>x += attn1(norm1(x))</c> (self-attention, or attention to
/// the text with <c>only_cross_attention</c>), <c>x += attn2(norm2(x), text)</c>, <c>x += ff(norm3(x))</c>.</para>
/// <para><c>norm_type="ada_norm_single"</c> (PixArt): the timestep vector [B, 6·dim] plus the block's
/// <c>scale_shift_table</c> [6, dim] give shift / scale / gate for the attention and the feed-forward;
/// <c>x += gate_msa · attn1(norm1(x)·(1 + scale_msa) + shift_msa)</c>, <c>x += attn2(x, text, mask)</c> (no norm),
/// <c>x += gate_mlp · ff(norm2(x)·(1 + scale_mlp) + shift_mlp)</c>; there is no norm3.</para>
/// LayerNorm affinity, eps, q/k/v bias and the feed-forward activation come from the config. <c>double_self_attention</c>,
/// the other ada norms and positional embeddings are not implemented (no supported model uses them).
/// </summary>
public sealed class BasicTransformerBlock : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly LayerNorm norm1;
    private readonly Attention attn1;
    private readonly LayerNorm? norm2;
    private readonly Attention? attn2;
    private readonly LayerNorm? norm3;
    private readonly FeedForward ff;
    private readonly Parameter? scale_shift_table;
#pragma warning restore IDE1006
    private readonly bool _onlyCrossAttention;
    private readonly bool _adaNormSingle;
    private readonly long _dim;

    /// <summary>Builds the block.</summary>
    /// <param name="dim">Token width.</param>
    /// <param name="heads">Attention heads.</param>
    /// <param name="dimHead">Width of one head.</param>
    /// <param name="crossAttentionDim">Width of the text states, or null for a block without cross-attention.</param>
    /// <param name="onlyCrossAttention">Whether attn1 also attends to the text (diffusers' only_cross_attention).</param>
    /// <param name="activationFn">Feed-forward activation (diffusers' default geglu).</param>
    /// <param name="normEps">LayerNorm epsilon.</param>
    /// <param name="device">Device of the parameters.</param>
    /// <param name="dtype">Dtype of the parameters.</param>
    /// <param name="normType">diffusers' norm_type: "layer_norm" (default) or "ada_norm_single".</param>
    /// <param name="attentionBias">Bias of the attentions' to_q / to_k / to_v (diffusers' attention_bias).</param>
    /// <param name="normElementwiseAffine">Whether the LayerNorms have weight and bias.</param>
    /// <exception cref="NotSupportedException"><paramref name="normType"/> is another norm type.</exception>
    public BasicTransformerBlock(long dim, int heads, long dimHead, long? crossAttentionDim, bool onlyCrossAttention = false,
        string activationFn = "geglu", double normEps = 1e-5, Device? device = null, ScalarType? dtype = null,
        string normType = "layer_norm", bool attentionBias = false, bool normElementwiseAffine = true)
        : base(nameof(BasicTransformerBlock))
    {
        if (onlyCrossAttention && crossAttentionDim is null)
            throw new ArgumentException("only_cross_attention needs a cross_attention_dim.", nameof(onlyCrossAttention));
        _adaNormSingle = normType switch
        {
            "layer_norm" => false,
            "ada_norm_single" => true,
            _ => throw new NotSupportedException($"BasicTransformerBlock norm_type '{normType}' is not supported; use layer_norm or ada_norm_single."),
        };
        _onlyCrossAttention = onlyCrossAttention;
        _dim = dim;
        norm1 = nn.LayerNorm(dim, normEps, elementwise_affine: normElementwiseAffine, device: device, dtype: dtype);
        attn1 = new Attention(dim, onlyCrossAttention ? crossAttentionDim : null, heads, dimHead, bias: attentionBias, device: device, dtype: dtype);
        if (crossAttentionDim is not null || _adaNormSingle)
            norm2 = nn.LayerNorm(dim, normEps, elementwise_affine: normElementwiseAffine, device: device, dtype: dtype);
        if (crossAttentionDim is not null)
            attn2 = new Attention(dim, crossAttentionDim, heads, dimHead, bias: attentionBias, device: device, dtype: dtype);
        if (!_adaNormSingle)
            norm3 = nn.LayerNorm(dim, normEps, elementwise_affine: normElementwiseAffine, device: device, dtype: dtype);
        ff = new FeedForward(dim, activationFn: activationFn, device: device, dtype: dtype);
        if (_adaNormSingle)
            scale_shift_table = new Parameter(torch.zeros([6, dim], dtype: dtype ?? ScalarType.Float32, device: device), requires_grad: false);
        RegisterComponents();
    }

    /// <summary>Applies the block without text (self-attention only).</summary>
    public override Tensor forward(Tensor hiddenStates) => forward(hiddenStates, null);

    /// <summary>Applies a layer_norm block to tokens [B, N, dim] with text <paramref name="encoderHiddenStates"/> [B, S, crossAttentionDim].</summary>
    /// <exception cref="InvalidOperationException">This is an ada_norm_single block (it needs the timestep vector).</exception>
    public Tensor forward(Tensor hiddenStates, Tensor? encoderHiddenStates)
    {
        if (_adaNormSingle) throw new InvalidOperationException("An ada_norm_single block needs the timestep vector: use the overload with timestep.");
        using var scope = NewDisposeScope();
        // Each residual sum lands in place in the branch output it adds (a fresh tensor; a + b in diffusers' order), and
        // the stream before it is freed at once (see Temporaries).
        var h = norm1.forward(hiddenStates).Consume(n => attn1.forward(n, _onlyCrossAttention ? encoderHiddenStates : null)).add_(hiddenStates);
        if (attn2 is not null)
        {
            // diffusers: with no text the cross-attention layer attends to the tokens themselves.
            h = h.Consume(x => norm2!.forward(x).Consume(n => attn2.forward(n, encoderHiddenStates)).add_(x));
        }
        h = h.Consume(x => norm3!.forward(x).Consume(ff.forward).add_(x));
        return h.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Applies an ada_norm_single block to tokens [B, N, dim] with text <paramref name="encoderHiddenStates"/> [B, S,
    /// crossAttentionDim], the cross-attention bias <paramref name="encoderAttentionBias"/> [B, 1, S] (0 keeps a text
    /// token, -10000 drops it; null: all kept) and <paramref name="timestep"/> [B, 6·dim] (AdaLayerNormSingle's output).
    /// </summary>
    /// <exception cref="InvalidOperationException">This is a layer_norm block.</exception>
    public Tensor forward(Tensor hiddenStates, Tensor? encoderHiddenStates, Tensor? encoderAttentionBias, Tensor timestep)
    {
        if (!_adaNormSingle) throw new InvalidOperationException("Only an ada_norm_single block takes a timestep vector.");
        using var scope = NewDisposeScope();
        long batch = hiddenStates.shape[0];
        var mod = (scale_shift_table!.unsqueeze(0) + timestep.reshape(batch, 6, -1)).chunk(6, 1);
        Tensor shiftMsa = mod[0], scaleMsa = mod[1], gateMsa = mod[2], shiftMlp = mod[3], scaleMlp = mod[4], gateMlp = mod[5];
        var norm = norm1.forward(hiddenStates) * (1 + scaleMsa) + shiftMsa;
        var attnOutput = gateMsa * attn1.forward(norm, _onlyCrossAttention ? encoderHiddenStates : null);
        var h = attnOutput + hiddenStates;
        if (attn2 is not null)
            h = attn2.forward(h, encoderHiddenStates, encoderAttentionBias) + h;
        norm = norm2!.forward(h) * (1 + scaleMlp) + shiftMlp;
        h = gateMlp * ff.forward(norm) + h;
        return h.MoveToOuterDisposeScope();
    }
}
