using DiffusersSharp.Models.TextEncoders;

namespace DiffusersSharp.Models.ImageEncoders;

/// <summary>
/// transformers' <c>CLIPVisionConfig</c> (an IP-Adapter's <c>image_encoder/config.json</c>); defaults are the Python
/// constructor's (ViT-B/32 sizes).
/// </summary>
public sealed record CLIPVisionConfig
{
    /// <summary>Width of the transformer.</summary>
    public int HiddenSize { get; init; } = 768;

    /// <summary>Width of the MLP.</summary>
    public int IntermediateSize { get; init; } = 3072;

    /// <summary>Width of <c>visual_projection</c>'s output (the image embedding).</summary>
    public int ProjectionDim { get; init; } = 512;

    /// <summary>Encoder layers.</summary>
    public int NumHiddenLayers { get; init; } = 12;

    /// <summary>Attention heads.</summary>
    public int NumAttentionHeads { get; init; } = 12;

    /// <summary>Input channels.</summary>
    public int NumChannels { get; init; } = 3;

    /// <summary>Input side in pixels.</summary>
    public int ImageSize { get; init; } = 224;

    /// <summary>Patch side in pixels.</summary>
    public int PatchSize { get; init; } = 32;

    /// <summary>MLP activation.</summary>
    public string HiddenAct { get; init; } = "quick_gelu";

    /// <summary>LayerNorm epsilon.</summary>
    public double LayerNormEps { get; init; } = 1e-5;

    /// <summary>Patches per image side squared plus the class token.</summary>
    public int NumPositions => (ImageSize / PatchSize) * (ImageSize / PatchSize) + 1;

    /// <summary>Throws <see cref="ArgumentException"/> when the config cannot describe a model.</summary>
    public void Validate()
    {
        Positive(NumChannels, "num_channels");
        Positive(ImageSize, "image_size");
        Positive(PatchSize, "patch_size");
        if (ImageSize % PatchSize != 0)
            throw new ArgumentException($"CLIPVisionConfig: image_size {ImageSize} is not a multiple of patch_size {PatchSize}.");
        EncoderConfig().Validate();
    }

    /// <summary>The encoder layers' sizes in the text config's terms (the layers are shared with the text model).</summary>
    internal CLIPTextConfig EncoderConfig() => new()
    {
        HiddenSize = HiddenSize, IntermediateSize = IntermediateSize, ProjectionDim = ProjectionDim, NumHiddenLayers = NumHiddenLayers,
        NumAttentionHeads = NumAttentionHeads, HiddenAct = HiddenAct, LayerNormEps = LayerNormEps,
    };

    private static void Positive(int value, string name)
    {
        if (value <= 0) throw new ArgumentException($"CLIPVisionConfig: {name} must be positive, got {value}.");
    }
}
