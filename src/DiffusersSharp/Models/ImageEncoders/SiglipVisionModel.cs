using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using DiffusersSharp.Models.TextEncoders;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.ImageEncoders;

/// <summary>What <see cref="SiglipVisionModel"/> returns; the tensors belong to the caller.</summary>
/// <param name="LastHiddenState">The last layer's output after <c>post_layernorm</c> [B, patches, hidden].</param>
/// <param name="PoolerOutput">The attention-pooling head's output [B, hidden] (null for a model without the head).</param>
/// <param name="HiddenStates">The patch embeddings, then every layer's output before post_layernorm (empty unless asked
/// for); diffusers' SD3 <c>encode_image</c> takes <c>hidden_states[-2]</c>.</param>
public sealed record SiglipVisionModelOutput(Tensor LastHiddenState, Tensor? PoolerOutput, IReadOnlyList<Tensor> HiddenStates) : IDisposable
{
    /// <inheritdoc />
    public void Dispose()
    {
        LastHiddenState.Dispose();
        PoolerOutput?.Dispose();
        foreach (var t in HiddenStates) t.Dispose();
    }
}

/// <summary>Patch embedding (a conv with bias, stride = patch) + learned positions, no class token (<c>vision_model.embeddings</c>).</summary>
internal sealed class SiglipVisionEmbeddings : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Conv2d patch_embedding;
    private readonly Embedding position_embedding;
#pragma warning restore IDE1006

    public SiglipVisionEmbeddings(SiglipVisionConfig config, Device? device, ScalarType? dtype) : base(nameof(SiglipVisionEmbeddings))
    {
        patch_embedding = nn.Conv2d(config.NumChannels, config.HiddenSize, config.PatchSize, stride: config.PatchSize, bias: true, device: device, dtype: dtype);
        position_embedding = nn.Embedding(config.NumPositions, config.HiddenSize, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor pixelValues)
    {
        using var scope = NewDisposeScope();
        var patches = patch_embedding.forward(pixelValues.to(patch_embedding.weight!.dtype)).flatten(2).transpose(1, 2);
        // transformers keeps position_ids as an arange buffer; made here instead.
        var positions = arange(patches.shape[1], dtype: ScalarType.Int64, device: patches.device).unsqueeze(0);
        return (patches + position_embedding.forward(positions)).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// transformers' <c>SiglipMultiheadAttentionPoolingHead</c> (<c>vision_model.head</c>): a learned <c>probe</c> token attends
/// to the image tokens (PyTorch's <c>nn.MultiheadAttention</c>, batch first), then a residual LayerNorm + MLP; returns the
/// probe's row [B, hidden].
/// </summary>
internal sealed class SiglipMultiheadAttentionPoolingHead : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Parameter probe;
    private readonly Layers.MultiheadAttention attention;
    private readonly LayerNorm layernorm;
    private readonly CLIPMLP mlp;
#pragma warning restore IDE1006

    public SiglipMultiheadAttentionPoolingHead(SiglipVisionConfig config, Device? device, ScalarType? dtype) : base(nameof(SiglipMultiheadAttentionPoolingHead))
    {
        probe = new Parameter(empty([1, 1, config.HiddenSize], device: device, dtype: dtype ?? ScalarType.Float32));
        attention = new Layers.MultiheadAttention(config.HiddenSize, config.NumAttentionHeads, device, dtype);
        layernorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        mlp = new CLIPMLP(config.EncoderConfig(), device, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        var query = probe.repeat(hidden.shape[0], 1, 1);
        // batch_first=True: the (L, N, E) layer takes the transposes.
        var h = attention.Attend(query.transpose(0, 1), hidden.transpose(0, 1)).transpose(0, 1);
        h = h + mlp.forward(layernorm.forward(h));
        return h.select(1, 0).MoveToOuterDisposeScope();
    }
}

/// <summary>transformers' <c>SiglipVisionTransformer</c> (<c>vision_model</c>): embeddings, the unmasked CLIP-style encoder,
/// post_layernorm, and the optional attention-pooling head.</summary>
internal sealed class SiglipVisionTransformer : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly SiglipVisionEmbeddings embeddings;
    private readonly CLIPEncoder encoder;
    private readonly LayerNorm post_layernorm;
    private readonly SiglipMultiheadAttentionPoolingHead? head;
#pragma warning restore IDE1006

    public SiglipVisionTransformer(SiglipVisionConfig config, Device? device, ScalarType? dtype) : base(nameof(SiglipVisionTransformer))
    {
        embeddings = new SiglipVisionEmbeddings(config, device, dtype);
        encoder = new CLIPEncoder(config.EncoderConfig(), device, dtype, causal: false);
        post_layernorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        if (config.VisionUseHead) head = new SiglipMultiheadAttentionPoolingHead(config, device, dtype);
        RegisterComponents();
    }

    /// <summary>Returns (last hidden state, pooled output, hidden states); tensors belong to the caller's scope.</summary>
    public (Tensor Last, Tensor? Pooled, List<Tensor> Hidden) Run(Tensor pixelValues, bool outputHiddenStates)
    {
        var hidden = new List<Tensor>();
        var h = embeddings.forward(pixelValues);
        if (outputHiddenStates) hidden.Add(h);
        foreach (var layer in encoder.Layers)
        {
            h = layer.forward(h);
            if (outputHiddenStates) hidden.Add(h);
        }
        var last = post_layernorm.forward(h);
        return (last, head?.forward(last), hidden);
    }
}

/// <summary>
/// transformers' <c>SiglipVisionModel</c>, the image encoder of the SD3.5 IP-Adapter (google/siglip-so400m-patch14-384):
/// patch embeddings with learned positions, CLIP-style pre-norm encoder layers (here the CLIP layers themselves, without
/// a causal mask), <c>post_layernorm</c> and, unless <c>vision_use_head</c> is false, the attention-pooling head.
/// State-dict keys equal transformers' (<c>vision_model.*</c>).
/// </summary>
public sealed class SiglipVisionModel : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly SiglipVisionTransformer vision_model;
#pragma warning restore IDE1006

    /// <summary>The configuration the model was built from (the vision part of a full SigLIP config).</summary>
    public SiglipVisionConfig Config { get; }

    /// <summary>Builds the model (random weights; on <c>meta</c> an empty shell to load into).</summary>
    public SiglipVisionModel(SiglipVisionConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(SiglipVisionModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config.Vision;
        vision_model = new SiglipVisionTransformer(Config, device, dtype);
        RegisterComponents();
    }

    /// <summary>The element type of the weights.</summary>
    public ScalarType Dtype => parameters().First().dtype;

    /// <summary>The device of the weights.</summary>
    public Device Device => parameters().First().device;

    /// <summary>
    /// Loads an image encoder folder (config.json + model.safetensors, or shards), strictly. A full SigLIP checkpoint
    /// (google/siglip-so400m-patch14-384: <c>model_type</c> "siglip", text and vision towers) loads its vision tower, as
    /// transformers' <c>SiglipVisionModel.from_pretrained</c> does: the text tower and the logit scale / bias are skipped.
    /// </summary>
    /// <exception cref="FileNotFoundException">No config or no weights in <paramref name="folder"/>.</exception>
    /// <exception cref="WeightLoadException">The weights do not fit the config.</exception>
    public static SiglipVisionModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<SiglipVisionConfig, SiglipVisionModel>(folder, (c, meta) => new SiglipVisionModel(c, meta, dtype), dtype, device, variant,
            new WeightLoadOptions
            {
                IgnoreUnexpected = k => k.StartsWith("text_model.", StringComparison.Ordinal) || k is "logit_scale" or "logit_bias"
                    || k == "vision_model.embeddings.position_ids",
            });

    /// <summary>Encodes preprocessed images <paramref name="pixelValues"/> [B, num_channels, image_size, image_size]
    /// (see <see cref="Images.SiglipImageProcessor"/>).</summary>
    /// <exception cref="ArgumentException">The input is not of that shape.</exception>
    public SiglipVisionModelOutput Forward(Tensor pixelValues, bool outputHiddenStates = false)
    {
        ArgumentNullException.ThrowIfNull(pixelValues);
        if (pixelValues.dim() != 4 || pixelValues.shape[1] != Config.NumChannels || pixelValues.shape[2] != Config.ImageSize || pixelValues.shape[3] != Config.ImageSize)
            throw new ArgumentException($"pixel_values must be [B, {Config.NumChannels}, {Config.ImageSize}, {Config.ImageSize}], got [{string.Join(", ", pixelValues.shape)}].", nameof(pixelValues));
        using var scope = NewDisposeScope();
        var (last, pooled, hidden) = vision_model.Run(pixelValues, outputHiddenStates);
        return new SiglipVisionModelOutput(last.MoveToOuterDisposeScope(), pooled?.MoveToOuterDisposeScope(),
            hidden.Select(t => t.MoveToOuterDisposeScope()).ToArray());
    }
}
