using System.Text.Json.Serialization;
using DiffusersSharp.Models.TextEncoders;

namespace DiffusersSharp.Models.ImageEncoders;

/// <summary>
/// transformers' <c>SiglipVisionConfig</c> (the SD3.5 IP-Adapter's image encoder, e.g. google/siglip-so400m-patch14-384);
/// defaults are the Python constructor's (siglip-base-patch16-224 sizes). A full <c>SiglipConfig</c> (<c>model_type</c>
/// "siglip", as that repository's config.json) carries it under <c>vision_config</c>, which
/// <see cref="SiglipVisionModel.FromPretrained"/> takes, as transformers' <c>SiglipVisionConfig.from_pretrained</c> does.
/// </summary>
public sealed record SiglipVisionConfig
{
    /// <summary>Width of the transformer.</summary>
    public int HiddenSize { get; init; } = 768;

    /// <summary>Width of the MLP.</summary>
    public int IntermediateSize { get; init; } = 3072;

    /// <summary>Encoder layers.</summary>
    public int NumHiddenLayers { get; init; } = 12;

    /// <summary>Attention heads.</summary>
    public int NumAttentionHeads { get; init; } = 12;

    /// <summary>Input channels.</summary>
    public int NumChannels { get; init; } = 3;

    /// <summary>Input side in pixels.</summary>
    public int ImageSize { get; init; } = 224;

    /// <summary>Patch side in pixels.</summary>
    public int PatchSize { get; init; } = 16;

    /// <summary>MLP activation.</summary>
    public string HiddenAct { get; init; } = "gelu_pytorch_tanh";

    /// <summary>LayerNorm epsilon.</summary>
    public double LayerNormEps { get; init; } = 1e-6;

    /// <summary>Whether the model has the attention-pooling head (<c>vision_model.head</c>; transformers' default true).</summary>
    public bool VisionUseHead { get; init; } = true;

    /// <summary>"siglip_vision_model", or "siglip" for a full SigLIP config holding <see cref="VisionConfig"/>.</summary>
    public string? ModelType { get; init; }

    /// <summary>The vision part of a full SigLIP config (null in an image encoder's own config).</summary>
    public SiglipVisionConfig? VisionConfig { get; init; }

    /// <summary>Patches per image (= positions: SigLIP has no class token).</summary>
    [JsonIgnore]
    public int NumPositions => (ImageSize / PatchSize) * (ImageSize / PatchSize);

    /// <summary>The config that describes the vision model: <see cref="VisionConfig"/> of a full SigLIP config, else this one.</summary>
    [JsonIgnore]
    public SiglipVisionConfig Vision => ModelType == "siglip" && VisionConfig is { } v ? v : this;

    /// <summary>Throws <see cref="ArgumentException"/> when the config cannot describe a model.</summary>
    public void Validate()
    {
        if (ModelType == "siglip" && VisionConfig is null)
            throw new ArgumentException("SiglipVisionConfig: a full SigLIP config (model_type \"siglip\") needs a vision_config.");
        var c = Vision;
        Positive(c.NumChannels, "num_channels");
        Positive(c.ImageSize, "image_size");
        Positive(c.PatchSize, "patch_size");
        if (c.ImageSize % c.PatchSize != 0)
            throw new ArgumentException($"SiglipVisionConfig: image_size {c.ImageSize} is not a multiple of patch_size {c.PatchSize}.");
        c.EncoderConfig().Validate();
    }

    /// <summary>The encoder layers' sizes in the CLIP text config's terms (SigLIP's encoder layers are CLIP's, unmasked).</summary>
    internal CLIPTextConfig EncoderConfig() => new()
    {
        HiddenSize = HiddenSize, IntermediateSize = IntermediateSize, ProjectionDim = HiddenSize, NumHiddenLayers = NumHiddenLayers,
        NumAttentionHeads = NumAttentionHeads, HiddenAct = HiddenAct, LayerNormEps = LayerNormEps,
    };

    private static void Positive(int value, string name)
    {
        if (value <= 0) throw new ArgumentException($"SiglipVisionConfig: {name} must be positive, got {value}.");
    }
}
