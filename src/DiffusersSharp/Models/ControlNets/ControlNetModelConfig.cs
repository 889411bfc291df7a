using System.Text.Json.Serialization;
using DiffusersSharp.IO;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.ControlNets;

/// <summary>
/// <c>config.json</c> of diffusers' <c>ControlNetModel</c> (SD 1.x / 2.x and SDXL ControlNets). Defaults are the Python
/// constructor defaults. The UNet's down path and mid block are described as in
/// <see cref="Unets.UNet2DConditionModelConfig"/>; options this port does not implement are rejected by <see cref="Validate"/>.
/// <see cref="ControlNetUnionModelConfig"/> extends it.
/// </summary>
public record ControlNetModelConfig
{
    /// <summary>Latent channels in.</summary>
    public int InChannels { get; init; } = 4;

    /// <summary>Channels of the control image.</summary>
    public int ConditioningChannels { get; init; } = 3;

    /// <summary>Timestep features as [cos, sin] rather than [sin, cos].</summary>
    public bool FlipSinToCos { get; init; } = true;

    /// <summary>Frequency shift of the timestep features.</summary>
    public double FreqShift { get; init; }

    /// <summary>Down block types, from the input side.</summary>
    public string[] DownBlockTypes { get; init; } = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"];

    /// <summary>Mid block type; only <c>UNetMidBlock2DCrossAttn</c> is supported.</summary>
    public string? MidBlockType { get; init; } = "UNetMidBlock2DCrossAttn";

    /// <summary>Whether the transformer blocks' first attention attends to the text (per block or for all).</summary>
    public OneOrMany<bool> OnlyCrossAttention { get; init; } = false;

    /// <summary>Channels of each level.</summary>
    public int[] BlockOutChannels { get; init; } = [320, 640, 1280, 1280];

    /// <summary>Resnets per down block.</summary>
    public int LayersPerBlock { get; init; } = 2;

    /// <summary>Padding of the downsampling convs.</summary>
    public int DownsamplePadding { get; init; } = 1;

    /// <summary>Output scale factor of the mid block's resnets.</summary>
    public double MidBlockScaleFactor { get; init; } = 1;

    /// <summary>Activation; only silu is supported.</summary>
    public string ActFn { get; init; } = "silu";

    /// <summary>Groups of every GroupNorm.</summary>
    public int? NormNumGroups { get; init; } = 32;

    /// <summary>Epsilon of the resnet GroupNorms.</summary>
    public double NormEps { get; init; } = 1e-5;

    /// <summary>Width of <c>encoder_hidden_states</c>.</summary>
    public int CrossAttentionDim { get; init; } = 1280;

    /// <summary>Transformer blocks in each cross-attention block (per block or for all; the mid block uses the last).</summary>
    public OneOrMany<int> TransformerLayersPerBlock { get; init; } = 1;

    /// <summary>Width of encoder states to project (not supported).</summary>
    public int? EncoderHidDim { get; init; }

    /// <summary>Projection type of encoder states (not supported).</summary>
    public string? EncoderHidDimType { get; init; }

    /// <summary>The number of attention HEADS per block unless <see cref="NumAttentionHeads"/> is set (diffusers' historical naming).</summary>
    public OneOrMany<int> AttentionHeadDim { get; init; } = 8;

    /// <summary>Heads per block; when null, <see cref="AttentionHeadDim"/> is used (as diffusers does).</summary>
    public OneOrMany<int>? NumAttentionHeads { get; init; }

    /// <summary>Whether the spatial transformers project with Linear layers (SD 2.x, SDXL) instead of 1x1 convs.</summary>
    public bool UseLinearProjection { get; init; }

    /// <summary>Class embedding type (not supported).</summary>
    public string? ClassEmbedType { get; init; }

    /// <summary>Extra embedding added to the time embedding: null or <c>"text_time"</c> (SDXL).</summary>
    public string? AdditionEmbedType { get; init; }

    /// <summary>Sinusoidal width of each SDXL time id.</summary>
    public int? AdditionTimeEmbedDim { get; init; }

    /// <summary>Number of class embeddings (not supported).</summary>
    public int? NumClassEmbeds { get; init; }

    /// <summary>Ignored, as by diffusers' default attention processor.</summary>
    public bool? UpcastAttention { get; init; }

    /// <summary>How resnets apply the time embedding; only "default".</summary>
    public string ResnetTimeScaleShift { get; init; } = "default";

    /// <summary>Input width of the SDXL <c>add_embedding</c>.</summary>
    public int? ProjectionClassEmbeddingsInputDim { get; init; }

    /// <summary>Channel order the ControlNet was trained on: "rgb", or "bgr" (the control image's channels are flipped).</summary>
    public string ControlnetConditioningChannelOrder { get; init; } = "rgb";

    /// <summary>Channels of the conditioning embedding's convs; one stride-2 conv per step between entries.</summary>
    public int[] ConditioningEmbeddingOutChannels { get; init; } = [16, 32, 96, 256];

    /// <summary>Whether the residuals are averaged over space (shuffle ControlNets); implies guess mode in the pipelines.</summary>
    public bool GlobalPoolConditions { get; init; }

    /// <summary>Unused unless addition_embed_type is "text" (not supported).</summary>
    public int AdditionEmbedTypeNumHeads { get; init; } = 64;

    /// <summary>Width of the time embedding: 4 x block_out_channels[0].</summary>
    [JsonIgnore]
    public int TimeEmbedDim => BlockOutChannels[0] * 4;

    /// <summary>Heads of each down block: <c>num_attention_heads or attention_head_dim</c>.</summary>
    [JsonIgnore]
    public int[] HeadsPerBlock => (NumAttentionHeads ?? AttentionHeadDim).Expand(DownBlockTypes.Length, NumAttentionHeads is null ? "attention_head_dim" : "num_attention_heads");

    /// <summary>The diffusers class the config describes, for messages.</summary>
    protected virtual string ModelClass => "ControlNetModel";

    /// <summary>Checks the config describes a ControlNet this port builds exactly as diffusers does.</summary>
    /// <exception cref="NotSupportedException">An option this port does not implement is set; the message names it.</exception>
    /// <exception cref="ArgumentException">The config is inconsistent.</exception>
    public virtual void Validate()
    {
        string model = ModelClass;
        void Unsupported(bool bad, string option, object? value, string hint = "")
        {
            if (bad) throw new NotSupportedException($"{model} config: {option} = {value ?? "null"} is not supported by DiffusersSharp{hint}.");
        }
        void Require(bool ok, string message)
        {
            if (!ok) throw new ArgumentException($"{model} config: " + message);
        }

        Unsupported(ClassEmbedType is not null, "class_embed_type", ClassEmbedType);
        Unsupported(NumClassEmbeds is not null, "num_class_embeds", NumClassEmbeds);
        Unsupported(AdditionEmbedType is not (null or "text_time"), "addition_embed_type", AdditionEmbedType, " (only null and \"text_time\")");
        Unsupported(EncoderHidDim is not null, "encoder_hid_dim", EncoderHidDim);
        Unsupported(EncoderHidDimType is not null, "encoder_hid_dim_type", EncoderHidDimType);
        Unsupported(ResnetTimeScaleShift != "default", "resnet_time_scale_shift", ResnetTimeScaleShift, " (only \"default\")");
        Unsupported(ActFn is not ("silu" or "swish"), "act_fn", ActFn, " (only silu)");
        Unsupported(NormNumGroups is null, "norm_num_groups", NormNumGroups);
        Unsupported(MidBlockType != "UNetMidBlock2DCrossAttn", "mid_block_type", MidBlockType, " (only UNetMidBlock2DCrossAttn)");
        Unsupported(ControlnetConditioningChannelOrder is not ("rgb" or "bgr"), "controlnet_conditioning_channel_order",
            ControlnetConditioningChannelOrder, " (nor by diffusers: rgb or bgr)");
        foreach (var type in DownBlockTypes)
            Unsupported(type is not ("CrossAttnDownBlock2D" or "DownBlock2D"), "down_block_types entry", type, " (only CrossAttnDownBlock2D and DownBlock2D)");
        if (TransformerLayersPerBlock.Nested is not null)
            Unsupported(true, "transformer_layers_per_block", TransformerLayersPerBlock, " as a list of lists");
        if (AdditionEmbedType == "text_time")
        {
            Require(AdditionTimeEmbedDim is > 0, "addition_embed_type \"text_time\" needs a positive addition_time_embed_dim.");
            Require(ProjectionClassEmbeddingsInputDim is > 0, "addition_embed_type \"text_time\" needs a positive projection_class_embeddings_input_dim.");
        }

        int n = DownBlockTypes.Length;
        Require(n > 0, "down_block_types must list at least one block.");
        Require(BlockOutChannels.Length == n, $"block_out_channels has {BlockOutChannels.Length} entries but down_block_types has {n}.");
        Require(InChannels > 0 && ConditioningChannels > 0, "in_channels and conditioning_channels must be positive.");
        Require(NormNumGroups > 0 && BlockOutChannels.All(c => c > 0 && c % NormNumGroups == 0),
            $"every block_out_channels entry must be a positive multiple of norm_num_groups ({NormNumGroups}).");
        Require(ConditioningEmbeddingOutChannels.Length > 0 && ConditioningEmbeddingOutChannels.All(c => c > 0),
            "conditioning_embedding_out_channels must list positive channel counts.");
        Require(BlockOutChannels[0] % 2 == 0, "block_out_channels[0] must be even (sinusoidal timestep features).");
        Require(LayersPerBlock > 0 && CrossAttentionDim > 0, "layers_per_block and cross_attention_dim must be positive.");
        Require(DownsamplePadding >= 0, "downsample_padding must not be negative.");
        var heads = HeadsPerBlock;
        for (int i = 0; i < n; i++)
            Require(heads[i] > 0 && BlockOutChannels[i] / heads[i] > 0, $"block {i} has {BlockOutChannels[i]} channels and {heads[i]} heads.");
        Require(TransformerLayersPerBlock.Expand(n, "transformer_layers_per_block").All(l => l > 0), "transformer_layers_per_block must be positive.");
        OnlyCrossAttention.Expand(n, "only_cross_attention");
    }
}
