using DiffusersSharp.IO;
using DiffusersSharp.Models.TextEncoders;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.ImageEncoders;

/// <summary>What <see cref="CLIPVisionModelWithProjection"/> returns; the tensors belong to the caller.</summary>
/// <param name="ImageEmbeds">The projected pooled output [B, projection_dim] (transformers' <c>image_embeds</c>).</param>
/// <param name="LastHiddenState">The last layer's output [B, positions, hidden] (no final LayerNorm, as transformers).</param>
/// <param name="HiddenStates">The embeddings after pre_layrnorm, then every layer's output (empty unless asked for).</param>
public sealed record CLIPVisionModelOutput(Tensor ImageEmbeds, Tensor LastHiddenState, IReadOnlyList<Tensor> HiddenStates) : IDisposable
{
    /// <inheritdoc />
    public void Dispose()
    {
        ImageEmbeds.Dispose();
        LastHiddenState.Dispose();
        foreach (var t in HiddenStates) t.Dispose();
    }
}

/// <summary>Class token + patch embedding (a bias-free conv with stride = patch) + learned positions (<c>vision_model.embeddings</c>).</summary>
internal sealed class CLIPVisionEmbeddings : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Parameter class_embedding;
    private readonly Conv2d patch_embedding;
    private readonly Embedding position_embedding;
#pragma warning restore IDE1006

    public CLIPVisionEmbeddings(CLIPVisionConfig config, Device? device, ScalarType? dtype) : base(nameof(CLIPVisionEmbeddings))
    {
        class_embedding = new Parameter(empty(config.HiddenSize, device: device, dtype: dtype ?? ScalarType.Float32));
        patch_embedding = nn.Conv2d(config.NumChannels, config.HiddenSize, config.PatchSize, stride: config.PatchSize, bias: false, device: device, dtype: dtype);
        position_embedding = nn.Embedding(config.NumPositions, config.HiddenSize, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor pixelValues)
    {
        using var scope = NewDisposeScope();
        long batch = pixelValues.shape[0];
        var patches = patch_embedding.forward(pixelValues.to(patch_embedding.weight!.dtype)).flatten(2).transpose(1, 2);
        var cls = class_embedding.expand(batch, 1, -1);
        var tokens = cat([cls, patches], 1);
        // transformers keeps position_ids as an arange buffer; made here instead.
        var positions = arange(tokens.shape[1], dtype: ScalarType.Int64, device: tokens.device).unsqueeze(0);
        return (tokens + position_embedding.forward(positions)).MoveToOuterDisposeScope();
    }
}

/// <summary>transformers' <c>CLIPVisionTransformer</c> (<c>vision_model</c>): embeddings, pre_layrnorm (sic), the unmasked
/// CLIP encoder, post_layernorm of the class token.</summary>
internal sealed class CLIPVisionTransformer : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly CLIPVisionEmbeddings embeddings;
    private readonly LayerNorm pre_layrnorm;
    private readonly CLIPEncoder encoder;
    private readonly LayerNorm post_layernorm;
#pragma warning restore IDE1006

    public CLIPVisionTransformer(CLIPVisionConfig config, Device? device, ScalarType? dtype) : base(nameof(CLIPVisionTransformer))
    {
        embeddings = new CLIPVisionEmbeddings(config, device, dtype);
        pre_layrnorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        encoder = new CLIPEncoder(config.EncoderConfig(), device, dtype, causal: false);
        post_layernorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Returns (last hidden state, pooled output, hidden states); tensors belong to the caller's scope.</summary>
    public (Tensor Last, Tensor Pooled, List<Tensor> Hidden) Run(Tensor pixelValues, bool outputHiddenStates)
    {
        var hidden = new List<Tensor>();
        var h = pre_layrnorm.forward(embeddings.forward(pixelValues));
        if (outputHiddenStates) hidden.Add(h);
        foreach (var layer in encoder.Layers)
        {
            h = layer.forward(h);
            if (outputHiddenStates) hidden.Add(h);
        }
        var pooled = post_layernorm.forward(h.select(1, 0));
        return (h, pooled, hidden);
    }
}

/// <summary>
/// transformers' <c>CLIPVisionModelWithProjection</c>, the image encoder of IP-Adapters: the CLIP vision transformer
/// (the text model's encoder layers, without the causal mask) and a bias-free <c>visual_projection</c> of the pooled
/// class token. State-dict keys equal transformers' (<c>vision_model.*</c>, <c>visual_projection.weight</c>).
/// </summary>
public sealed class CLIPVisionModelWithProjection : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly CLIPVisionTransformer vision_model;
    private readonly Linear visual_projection;
#pragma warning restore IDE1006

    /// <summary>The configuration the model was built from.</summary>
    public CLIPVisionConfig Config { get; }

    /// <summary>Builds the model (random weights; on <c>meta</c> an empty shell to load into).</summary>
    public CLIPVisionModelWithProjection(CLIPVisionConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(CLIPVisionModelWithProjection))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        vision_model = new CLIPVisionTransformer(config, device, dtype);
        visual_projection = new Linear(config.HiddenSize, config.ProjectionDim, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>The element type of the weights.</summary>
    public ScalarType Dtype => visual_projection.weight!.dtype;

    /// <summary>The device of the weights.</summary>
    public Device Device => visual_projection.weight!.device;

    /// <summary>
    /// Loads an <c>image_encoder</c> folder (config.json + model.safetensors, or shards), strictly; or, as transformers'
    /// <c>CLIPVisionModelWithProjection.from_pretrained</c> does, the vision half of a whole CLIP model's folder (a
    /// <c>CLIPModel</c> config.json with a <c>vision_config</c>, such as openai/clip-vit-large-patch14, the image encoder
    /// of XLabs' Flux IP-Adapter): the config is its <c>vision_config</c> and the text model's weights
    /// (<c>text_model.*</c>, <c>text_projection</c>, <c>logit_scale</c>) are skipped; the vision weights load strictly.
    /// </summary>
    /// <exception cref="FileNotFoundException">No config or no weights in <paramref name="folder"/>.</exception>
    /// <exception cref="WeightLoadException">The weights do not fit the config.</exception>
    public static CLIPVisionModelWithProjection FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        string configPath = Path.Combine(folder, "config.json");
        var (config, whole) = ReadConfig(configPath);
        return PretrainedLoader.Load(folder, config, (c, meta) => new CLIPVisionModelWithProjection(c, meta, dtype), dtype, device, variant,
            new WeightLoadOptions
            {
                IgnoreUnexpected = k => k == "vision_model.embeddings.position_ids" // older transformers' buffer
                    || (whole && (k.StartsWith("text_model.", StringComparison.Ordinal) || k is "text_projection.weight" or "logit_scale")),
            });
    }

    /// <summary>The vision config of <paramref name="path"/>: the file itself, or its <c>vision_config</c> when it is another
    /// model's config that holds one (transformers' <c>base_config_key</c> rule); <c>Whole</c> tells the latter.</summary>
    private static (CLIPVisionConfig Config, bool Whole) ReadConfig(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Config file not found: {path}", path);
        string json = File.ReadAllText(path);
        System.Text.Json.JsonDocument doc;
        try
        {
            doc = System.Text.Json.JsonDocument.Parse(json, new System.Text.Json.JsonDocumentOptions { CommentHandling = System.Text.Json.JsonCommentHandling.Skip, AllowTrailingCommas = true });
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new InvalidDataException($"{path}: invalid config: {e.Message}", e);
        }
        using var _ = doc;
        var root = doc.RootElement;
        bool vision = root.TryGetProperty("model_type", out var type) && type.ValueKind == System.Text.Json.JsonValueKind.String && type.GetString() == "clip_vision_model";
        if (!vision && root.ValueKind == System.Text.Json.JsonValueKind.Object && root.TryGetProperty("vision_config", out var sub)
            && sub.ValueKind == System.Text.Json.JsonValueKind.Object)
            return (ConfigJson.Parse<CLIPVisionConfig>(sub.GetRawText(), path + " (vision_config)"), true);
        return (ConfigJson.Parse<CLIPVisionConfig>(json, path), false);
    }

    /// <summary>Encodes preprocessed images <paramref name="pixelValues"/> [B, num_channels, image_size, image_size]
    /// (see <see cref="Images.CLIPImageProcessor"/>).</summary>
    /// <exception cref="ArgumentException">The input is not of that shape.</exception>
    public CLIPVisionModelOutput Forward(Tensor pixelValues, bool outputHiddenStates = false)
    {
        ArgumentNullException.ThrowIfNull(pixelValues);
        if (pixelValues.dim() != 4 || pixelValues.shape[1] != Config.NumChannels || pixelValues.shape[2] != Config.ImageSize || pixelValues.shape[3] != Config.ImageSize)
            throw new ArgumentException($"pixel_values must be [B, {Config.NumChannels}, {Config.ImageSize}, {Config.ImageSize}], got [{string.Join(", ", pixelValues.shape)}].", nameof(pixelValues));
        using var scope = NewDisposeScope();
        var (last, pooled, hidden) = vision_model.Run(pixelValues, outputHiddenStates);
        var embeds = visual_projection.forward(pooled);
        return new CLIPVisionModelOutput(embeds.MoveToOuterDisposeScope(), last.MoveToOuterDisposeScope(),
            hidden.Select(t => t.MoveToOuterDisposeScope()).ToArray());
    }
}
