using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>Token + learned position embeddings (<c>text_model.embeddings</c>).</summary>
internal sealed class CLIPTextEmbeddings : nn.Module<Tensor, Tensor>
{
    private readonly Embedding token_embedding;
    private readonly Embedding position_embedding;

    public CLIPTextEmbeddings(CLIPTextConfig config, Device? device, ScalarType? dtype) : base(nameof(CLIPTextEmbeddings))
    {
        token_embedding = nn.Embedding(config.VocabSize, config.HiddenSize, device: device, dtype: dtype);
        position_embedding = nn.Embedding(config.MaxPositionEmbeddings, config.HiddenSize, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor inputIds)
    {
        // transformers keeps position_ids as a (non-persistent) arange buffer; it is made here instead.
        using var positions = arange(inputIds.shape[1], dtype: ScalarType.Int64, device: inputIds.device).unsqueeze(0);
        using var tokens = token_embedding.forward(inputIds);
        using var pos = position_embedding.forward(positions);
        return tokens + pos;
    }
}

/// <summary>Multi-head self-attention with biased q/k/v/out projections, 1/sqrt(head_dim) scaling; causal for the text
/// model, unmasked for the vision model.</summary>
internal sealed class CLIPAttention : nn.Module<Tensor, Tensor>
{
    private readonly Linear q_proj, k_proj, v_proj, out_proj;
    private readonly long _heads, _headDim;
    private readonly bool _causal;

    public CLIPAttention(CLIPTextConfig config, Device? device, ScalarType? dtype, bool causal = true) : base(nameof(CLIPAttention))
    {
        _causal = causal;
        int h = config.HiddenSize;
        _heads = config.NumAttentionHeads;
        _headDim = h / config.NumAttentionHeads;
        q_proj = new Linear(h, h, hasBias: true, device: device, dtype: dtype);
        k_proj = new Linear(h, h, hasBias: true, device: device, dtype: dtype);
        v_proj = new Linear(h, h, hasBias: true, device: device, dtype: dtype);
        out_proj = new Linear(h, h, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Self-attention (SD pipelines pass no padding mask, so the causal mask of the text model is the only one).</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], s = x.shape[1];
        Tensor Heads(Linear proj) => proj.forward(x).view(b, s, _heads, _headDim).transpose(1, 2);
        var attn = nn.functional.scaled_dot_product_attention(Heads(q_proj), Heads(k_proj), Heads(v_proj), is_casual: _causal);
        var merged = attn.transpose(1, 2).reshape(b, s, _heads * _headDim);
        return out_proj.forward(merged).MoveToOuterDisposeScope();
    }
}

/// <summary>fc1 -> activation -> fc2.</summary>
internal sealed class CLIPMLP : nn.Module<Tensor, Tensor>
{
    private readonly Linear fc1, fc2;
    private readonly string _act;

    public CLIPMLP(CLIPTextConfig config, Device? device, ScalarType? dtype) : base(nameof(CLIPMLP))
    {
        _act = config.HiddenAct;
        fc1 = new Linear(config.HiddenSize, config.IntermediateSize, hasBias: true, device: device, dtype: dtype);
        fc2 = new Linear(config.IntermediateSize, config.HiddenSize, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return fc2.forward(HfActivations.Apply(_act, fc1.forward(x))).MoveToOuterDisposeScope();
    }
}

/// <summary>Pre-LN transformer layer: x + attn(ln1(x)), then x + mlp(ln2(x)).</summary>
internal sealed class CLIPEncoderLayer : nn.Module<Tensor, Tensor>
{
    private readonly CLIPAttention self_attn;
    private readonly LayerNorm layer_norm1;
    private readonly CLIPMLP mlp;
    private readonly LayerNorm layer_norm2;

    public CLIPEncoderLayer(CLIPTextConfig config, Device? device, ScalarType? dtype, bool causal = true) : base(nameof(CLIPEncoderLayer))
    {
        self_attn = new CLIPAttention(config, device, dtype, causal);
        layer_norm1 = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        mlp = new CLIPMLP(config, device, dtype);
        layer_norm2 = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x + self_attn.forward(layer_norm1.forward(x));
        h = h + mlp.forward(layer_norm2.forward(h));
        return h.MoveToOuterDisposeScope();
    }
}

/// <summary>The stack of encoder layers (<c>text_model.encoder.layers.{i}</c>, or <c>vision_model.encoder.layers.{i}</c>
/// without the causal mask).</summary>
internal sealed class CLIPEncoder : nn.Module
{
    private readonly ModuleList<CLIPEncoderLayer> layers;

    public CLIPEncoder(CLIPTextConfig config, Device? device, ScalarType? dtype, bool causal = true) : base(nameof(CLIPEncoder))
    {
        layers = new ModuleList<CLIPEncoderLayer>();
        for (int i = 0; i < config.NumHiddenLayers; i++) layers.Add(new CLIPEncoderLayer(config, device, dtype, causal));
        RegisterComponents();
    }

    public IEnumerable<CLIPEncoderLayer> Layers => layers;
}

/// <summary>
/// transformers' <c>CLIPTextTransformer</c> (the <c>text_model</c> submodule): embeddings, causal encoder, final
/// LayerNorm, and pooling at the end-of-text position. Shared by <see cref="CLIPTextModel"/> and
/// <see cref="CLIPTextModelWithProjection"/>.
/// </summary>
internal sealed class CLIPTextTransformer : nn.Module
{
    private readonly CLIPTextEmbeddings embeddings;
    private readonly CLIPEncoder encoder;
    private readonly LayerNorm final_layer_norm;
    private readonly CLIPTextConfig _config;

    public CLIPTextTransformer(CLIPTextConfig config, Device? device, ScalarType? dtype) : base(nameof(CLIPTextTransformer))
    {
        _config = config;
        embeddings = new CLIPTextEmbeddings(config, device, dtype);
        encoder = new CLIPEncoder(config, device, dtype);
        final_layer_norm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Runs the encoder on checked int64 ids. Returns (last hidden state after the final LayerNorm, pooled output,
    /// hidden states: embeddings output then every layer's output, or empty). Tensors belong to the caller's scope.
    /// </summary>
    public (Tensor Last, Tensor Pooled, List<Tensor> Hidden) Run(Tensor ids, bool outputHiddenStates)
    {
        var hidden = new List<Tensor>();
        var h = embeddings.forward(ids);
        if (outputHiddenStates) hidden.Add(h);
        foreach (var layer in encoder.Layers)
        {
            var next = layer.forward(h);
            if (!outputHiddenStates) h.Dispose();
            h = next;
            if (outputHiddenStates) hidden.Add(h);
        }
        var last = final_layer_norm.forward(h);
        if (!outputHiddenStates) h.Dispose();
        // eos_token_id == 2 is the legacy config value: transformers then pools at argmax(ids), the highest id (EOS in
        // CLIP's vocabulary). Otherwise it pools at the first occurrence of eos_token_id.
        using var index = _config.EosTokenId == 2
            ? ids.argmax(-1)
            : ids.eq(_config.EosTokenId).to(ScalarType.Int32).argmax(-1);
        using var rows = arange(ids.shape[0], dtype: ScalarType.Int64, device: ids.device);
        var pooled = last.index(new TensorIndex[] { TensorIndex.Tensor(rows), TensorIndex.Tensor(index) });
        return (last, pooled, hidden);
    }

    /// <summary>The final LayerNorm alone (SD 1.x's clip_skip applies it to an earlier hidden state).</summary>
    public Tensor FinalLayerNorm(Tensor hidden) => final_layer_norm.forward(hidden);
}
