using System.Text.Json.Serialization;
using DiffusersSharp.IO;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Unets;

/// <summary>
/// <c>unet/config.json</c> of diffusers' <c>UNet2DConditionModel</c> (SD 1.x / 2.x, SDXL, the x4 upscaler, the latent
/// upscaler's K-UNet). Defaults are the Python
/// constructor defaults. Fields that diffusers accepts as one value or one value per block are
/// <see cref="OneOrMany{T}"/>. Fields that the supported blocks never read in diffusers either
/// (<c>resnet_skip_time_act</c>, <c>resnet_out_scale_factor</c>, <c>cross_attention_norm</c>,
/// <c>mid_block_only_cross_attention</c>, <c>addition_embed_type_num_heads</c>, <c>dropout</c> at inference) are kept
/// and ignored; values that would need code this port lacks are rejected by <see cref="Validate"/>.
/// </summary>
public sealed record UNet2DConditionModelConfig
{
    /// <summary>Latent side the model was trained at (pipelines derive the default image size from it), or null.</summary>
    public OneOrMany<int>? SampleSize { get; init; }

    /// <summary>The diffusers version that wrote the config (<c>_diffusers_version</c>), or null: the SD pipelines raise
    /// a <see cref="SampleSize"/> under 64 of configs older than 0.9.0, as diffusers does.</summary>
    [JsonPropertyName("_diffusers_version")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? DiffusersVersion { get; init; }

    /// <summary>Latent channels in (9 for inpainting UNets: latents, mask, masked-image latents; 7 for the x4 upscaler:
    /// latents and the low-resolution image).</summary>
    public int InChannels { get; init; } = 4;

    /// <summary>Channels of the prediction.</summary>
    public int OutChannels { get; init; } = 4;

    /// <summary>Whether the input is mapped x -> 2x - 1 first.</summary>
    public bool CenterInputSample { get; init; }

    /// <summary>Timestep features as [cos, sin] rather than [sin, cos].</summary>
    public bool FlipSinToCos { get; init; } = true;

    /// <summary>Frequency shift of the timestep features.</summary>
    public double FreqShift { get; init; }

    /// <summary>Down block types, from the input side.</summary>
    public string[] DownBlockTypes { get; init; } = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"];

    /// <summary>Mid block type, or null for none.</summary>
    public string? MidBlockType { get; init; } = "UNetMidBlock2DCrossAttn";

    /// <summary>Up block types, from the deepest level.</summary>
    public string[] UpBlockTypes { get; init; } = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"];

    /// <summary>Whether the transformer blocks' first attention attends to the text instead of the image (per block or for all).</summary>
    public OneOrMany<bool> OnlyCrossAttention { get; init; } = false;

    /// <summary>Channels of each level.</summary>
    public int[] BlockOutChannels { get; init; } = [320, 640, 1280, 1280];

    /// <summary>Resnets per down block (up blocks have one more).</summary>
    public OneOrMany<int> LayersPerBlock { get; init; } = 2;

    /// <summary>Padding of the downsampling convs.</summary>
    public int DownsamplePadding { get; init; } = 1;

    /// <summary>Output scale factor of the mid block's resnets.</summary>
    public double MidBlockScaleFactor { get; init; } = 1;

    /// <summary>Dropout probability (no effect at inference).</summary>
    public double Dropout { get; init; }

    /// <summary>Activation of resnets, time embedding and output head: silu (swish), or gelu in a K-UNet (the latent upscaler's).</summary>
    public string ActFn { get; init; } = "silu";

    /// <summary>Groups of every GroupNorm; null only in a K-UNet (its blocks group channels by 32; no output norm then).</summary>
    public int? NormNumGroups { get; init; } = 32;

    /// <summary>Epsilon of the resnet and output GroupNorms.</summary>
    public double NormEps { get; init; } = 1e-5;

    /// <summary>Width of <c>encoder_hidden_states</c> (per block or for all).</summary>
    public OneOrMany<int> CrossAttentionDim { get; init; } = 1280;

    /// <summary>Transformer blocks in each cross-attention block (per block or for all; the mid block uses the last).</summary>
    public OneOrMany<int> TransformerLayersPerBlock { get; init; } = 1;

    /// <summary>Up-block transformer depths of asymmetric UNets (not supported).</summary>
    public OneOrMany<int>? ReverseTransformerLayersPerBlock { get; init; }

    /// <summary>Width of encoder states to project (not supported).</summary>
    public int? EncoderHidDim { get; init; }

    /// <summary>Projection type of encoder states (not supported).</summary>
    public string? EncoderHidDimType { get; init; }

    /// <summary>
    /// Despite its name, the number of attention HEADS of each block (diffusers' historical naming; the head width is
    /// <c>channels / heads</c>). SD 1.5: 8 (8 heads of 40..160), SD 2.x: [5, 10, 20, 20], SDXL: [5, 10, 20] (heads of 64).
    /// </summary>
    public OneOrMany<int> AttentionHeadDim { get; init; } = 8;

    /// <summary>
    /// Must stay null: diffusers raises when it is set (its value would be taken from <see cref="AttentionHeadDim"/>,
    /// see <see cref="HeadsPerBlock"/>).
    /// </summary>
    public OneOrMany<int>? NumAttentionHeads { get; init; }

    /// <summary>Two transformers per attention block (not supported).</summary>
    public bool DualCrossAttention { get; init; }

    /// <summary>Whether the spatial transformers project in and out with Linear layers (SD 2.x, SDXL) instead of 1x1 convs.</summary>
    public bool UseLinearProjection { get; init; }

    /// <summary>
    /// How <c>class_labels</c> are embedded and added to the time embedding: null (an <c>nn.Embedding</c> of
    /// <see cref="NumClassEmbeds"/> rows when that is set, else no class embedding), <c>"timestep"</c> (the labels'
    /// sinusoidal features through a <c>TimestepEmbedding</c>), <c>"identity"</c> (the labels are the embedding),
    /// <c>"projection"</c> (a <c>TimestepEmbedding</c> of <see cref="ProjectionClassEmbeddingsInputDim"/>-wide labels) or
    /// <c>"simple_projection"</c> (one Linear of them).
    /// </summary>
    public string? ClassEmbedType { get; init; }

    /// <summary>Extra embedding added to the time embedding: null or <c>"text_time"</c> (SDXL).</summary>
    public string? AdditionEmbedType { get; init; }

    /// <summary>Sinusoidal width of each SDXL time id.</summary>
    public int? AdditionTimeEmbedDim { get; init; }

    /// <summary>Rows of the class embedding table when <see cref="ClassEmbedType"/> is null (the x4 upscaler: 1000, one
    /// per noise level); the labels are integer indices into it.</summary>
    public int? NumClassEmbeds { get; init; }

    /// <summary>
    /// Attention in float32 for half-precision models. Ignored, as diffusers' default processor (AttnProcessor2_0,
    /// scaled_dot_product_attention) ignores it too; only its legacy processors honour it.
    /// </summary>
    public bool? UpcastAttention { get; init; }

    /// <summary>How resnets apply the time embedding; only "default" (added after conv1) is supported, but a K-UNet's blocks
    /// ignore it (their resnets always condition their GroupNorms, <c>ada_group</c>), as in diffusers.</summary>
    public string ResnetTimeScaleShift { get; init; } = "default";

    /// <summary>Unused by the supported blocks (as in diffusers).</summary>
    public bool ResnetSkipTimeAct { get; init; }

    /// <summary>Unused by the supported blocks (as in diffusers).</summary>
    public double ResnetOutScaleFactor { get; init; } = 1.0;

    /// <summary>Timestep embedding type: "positional" (sinusoidal) or "fourier" (<see cref="Layers.GaussianFourierProjection"/>, the
    /// latent upscaler's; the time embedding is then 2 x block_out_channels[0] wide unless <see cref="TimeEmbeddingDim"/> says).</summary>
    public string TimeEmbeddingType { get; init; } = "positional";

    /// <summary>Width of the time embedding (default 4 x block_out_channels[0]; 2 x with "fourier").</summary>
    public int? TimeEmbeddingDim { get; init; }

    /// <summary>Activation applied once to the summed embedding: null, silu or gelu.</summary>
    public string? TimeEmbeddingActFn { get; init; }

    /// <summary>Activation after the time MLP: null, silu or gelu (the latent upscaler's).</summary>
    public string? TimestepPostAct { get; init; }

    /// <summary>Width of the timestep condition of guidance-distilled models (LCM: 256), projected by
    /// <c>time_embedding.cond_proj</c>; null for none. Pipelines then pass the guidance-scale embedding instead of running
    /// classifier-free guidance.</summary>
    public int? TimeCondProjDim { get; init; }

    /// <summary>Kernel of conv_in (odd; padded to keep the size: 3, or the latent upscaler's 1).</summary>
    public int ConvInKernel { get; init; } = 3;

    /// <summary>Kernel of conv_out (odd, as conv_in).</summary>
    public int ConvOutKernel { get; init; } = 3;

    /// <summary>Input width of the SDXL <c>add_embedding</c>: text_embeds width + time ids x addition_time_embed_dim (2816 for
    /// SDXL base); also the label width of the <c>"projection"</c> / <c>"simple_projection"</c> class embeddings.</summary>
    public int? ProjectionClassEmbeddingsInputDim { get; init; }

    /// <summary>Attention type; only "default" is supported (GLIGEN's gated types are not).</summary>
    public string AttentionType { get; init; } = "default";

    /// <summary>Concatenate class and time embeddings (not supported).</summary>
    public bool ClassEmbeddingsConcat { get; init; }

    /// <summary>Unused by <c>UNetMidBlock2DCrossAttn</c> (as in diffusers).</summary>
    public bool? MidBlockOnlyCrossAttention { get; init; }

    /// <summary>Unused by the supported blocks (as in diffusers).</summary>
    public string? CrossAttentionNorm { get; init; }

    /// <summary>Unused unless addition_embed_type is "text" (not supported).</summary>
    public int AdditionEmbedTypeNumHeads { get; init; } = 64;

    /// <summary>The class embedding this config builds (diffusers' <c>_set_class_embedding</c>): <see cref="ClassEmbedType"/>,
    /// <c>"embedding"</c> for a table of <see cref="NumClassEmbeds"/> rows, or null for none.</summary>
    [JsonIgnore]
    public string? ClassEmbeddingKind => ClassEmbedType ?? (NumClassEmbeds is not null ? "embedding" : null);

    /// <summary>Width of the time embedding the blocks receive.</summary>
    [JsonIgnore]
    public int TimeEmbedDim => TimeEmbeddingDim ?? BlockOutChannels[0] * (TimeEmbeddingType == "fourier" ? 2 : 4);

    /// <summary>Width of the timestep features the time MLP takes: block_out_channels[0] (positional) or the time embedding
    /// width (fourier).</summary>
    [JsonIgnore]
    public int TimestepInputDim => TimeEmbeddingType == "fourier" ? TimeEmbedDim : BlockOutChannels[0];

    /// <summary>Whether the blocks are diffusers' K-diffusion ones (<c>KDownBlock2D</c>, <c>KCrossAttnDownBlock2D</c>,
    /// <c>KCrossAttnUpBlock2D</c>, <c>KUpBlock2D</c>: stabilityai/sd-x2-latent-upscaler); a UNet has them all or none.</summary>
    [JsonIgnore]
    public bool IsKUNet => DownBlockTypes.Any(IsKBlock) || UpBlockTypes.Any(IsKBlock);

    private static bool IsKBlock(string type) => type is "KDownBlock2D" or "KCrossAttnDownBlock2D" or "KCrossAttnUpBlock2D" or "KUpBlock2D";

    /// <summary>Number of upsampling layers (levels - 1); latents whose sides are multiples of 2^this need no explicit upsample sizes.</summary>
    [JsonIgnore]
    public int NumUpsamplers => BlockOutChannels.Length - 1;

    /// <summary>Heads of each down block: <c>num_attention_heads or attention_head_dim</c>, as diffusers computes it.</summary>
    [JsonIgnore]
    public int[] HeadsPerBlock => (NumAttentionHeads ?? AttentionHeadDim).Expand(DownBlockTypes.Length, NumAttentionHeads is null ? "attention_head_dim" : "num_attention_heads");

    /// <summary>Checks the config describes a model this port builds exactly as diffusers does.</summary>
    /// <exception cref="NotSupportedException">An option this port does not implement is set; the message names it.</exception>
    /// <exception cref="ArgumentException">The config is inconsistent (list lengths, channel counts).</exception>
    public void Validate()
    {
        static void Unsupported(bool bad, string option, object? value, string hint = "")
        {
            if (bad)
                throw new NotSupportedException($"UNet2DConditionModel config: {option} = {value ?? "null"} is not supported by DiffusersSharp{hint}.");
        }
        static void Require(bool ok, string message)
        {
            if (!ok) throw new ArgumentException("UNet2DConditionModel config: " + message);
        }

        Unsupported(NumAttentionHeads is not null, "num_attention_heads", NumAttentionHeads,
            " (nor by diffusers, which raises: the head count is read from attention_head_dim)");
        Unsupported(ClassEmbedType is not (null or "timestep" or "identity" or "projection" or "simple_projection"), "class_embed_type", ClassEmbedType,
            " (only null, \"timestep\", \"identity\", \"projection\" and \"simple_projection\")");
        Unsupported(ClassEmbeddingsConcat, "class_embeddings_concat", ClassEmbeddingsConcat);
        Unsupported(AdditionEmbedType is not (null or "text_time"), "addition_embed_type", AdditionEmbedType, " (only null and \"text_time\")");
        Unsupported(EncoderHidDim is not null, "encoder_hid_dim", EncoderHidDim);
        Unsupported(EncoderHidDimType is not null, "encoder_hid_dim_type", EncoderHidDimType);
        bool k = IsKUNet;
        Unsupported(TimeEmbeddingType is not ("positional" or "fourier"), "time_embedding_type", TimeEmbeddingType, " (only \"positional\" and \"fourier\")");
        Unsupported(TimeEmbeddingActFn is not null && !Layers.DiffusersActivations.IsKnown(TimeEmbeddingActFn), "time_embedding_act_fn", TimeEmbeddingActFn, " (only null, silu and gelu)");
        Unsupported(TimestepPostAct is not null && !Layers.DiffusersActivations.IsKnown(TimestepPostAct), "timestep_post_act", TimestepPostAct, " (only null, silu and gelu)");
        Unsupported(!k && ResnetTimeScaleShift != "default", "resnet_time_scale_shift", ResnetTimeScaleShift, " (only \"default\")");
        Unsupported(DualCrossAttention, "dual_cross_attention", DualCrossAttention);
        Unsupported(AttentionType != "default", "attention_type", AttentionType, " (only \"default\")");
        Unsupported(ConvInKernel <= 0 || ConvInKernel % 2 == 0, "conv_in_kernel", ConvInKernel, " (only odd sizes)");
        Unsupported(ConvOutKernel <= 0 || ConvOutKernel % 2 == 0, "conv_out_kernel", ConvOutKernel, " (only odd sizes)");
        Unsupported(k ? !Layers.DiffusersActivations.IsKnown(ActFn) : ActFn is not ("silu" or "swish"), "act_fn", ActFn, k ? " (only silu and gelu)" : " (only silu, or gelu in a K-UNet)");
        Unsupported(!k && NormNumGroups is null, "norm_num_groups", NormNumGroups, " (null only in a K-UNet)");
        if (k)
        {
            Unsupported(!DownBlockTypes.All(IsKBlock) || !UpBlockTypes.All(IsKBlock), "down_block_types / up_block_types", string.Join(", ", DownBlockTypes.Concat(UpBlockTypes)),
                " (K-diffusion blocks mixed with others)");
            Unsupported(MidBlockType is not null, "mid_block_type", MidBlockType, " in a K-UNet (only null)");
        }
        Unsupported(ReverseTransformerLayersPerBlock is not null, "reverse_transformer_layers_per_block", ReverseTransformerLayersPerBlock);
        Unsupported(MidBlockType is not (null or "UNetMidBlock2DCrossAttn"), "mid_block_type", MidBlockType, " (only UNetMidBlock2DCrossAttn or null)");
        foreach (var type in DownBlockTypes)
            Unsupported(type is not ("CrossAttnDownBlock2D" or "DownBlock2D" or "KDownBlock2D" or "KCrossAttnDownBlock2D"), "down_block_types entry", type,
                " (only CrossAttnDownBlock2D, DownBlock2D, KDownBlock2D and KCrossAttnDownBlock2D)");
        foreach (var type in UpBlockTypes)
            Unsupported(type is not ("CrossAttnUpBlock2D" or "UpBlock2D" or "KCrossAttnUpBlock2D" or "KUpBlock2D"), "up_block_types entry", type,
                " (only CrossAttnUpBlock2D, UpBlock2D, KCrossAttnUpBlock2D and KUpBlock2D)");
        if (TransformerLayersPerBlock.Nested is not null)
            Unsupported(true, "transformer_layers_per_block", TransformerLayersPerBlock, " as a list of lists (asymmetric UNets)");
        if (AdditionEmbedType == "text_time")
        {
            Require(AdditionTimeEmbedDim is > 0, "addition_embed_type \"text_time\" needs a positive addition_time_embed_dim.");
            Require(ProjectionClassEmbeddingsInputDim is > 0, "addition_embed_type \"text_time\" needs a positive projection_class_embeddings_input_dim.");
        }

        int n = DownBlockTypes.Length;
        Require(n > 0, "down_block_types must list at least one block.");
        Require(UpBlockTypes.Length == n, $"down_block_types has {n} entries but up_block_types has {UpBlockTypes.Length}.");
        Require(BlockOutChannels.Length == n, $"block_out_channels has {BlockOutChannels.Length} entries but down_block_types has {n}.");
        Require(InChannels > 0 && OutChannels > 0, "in_channels and out_channels must be positive.");
        if (NormNumGroups is not null || !k)
            Require(NormNumGroups > 0 && BlockOutChannels.All(c => c > 0 && c % NormNumGroups == 0),
                $"every block_out_channels entry must be a positive multiple of norm_num_groups ({NormNumGroups}).");
        if (k)
            Require(BlockOutChannels.All(c => c >= 32 && c % (c / 32) == 0),
                "every block_out_channels entry of a K-UNet must be at least 32 and split into channels / 32 equal groups.");
        Require(DownsamplePadding >= 0, "downsample_padding must not be negative.");
        Require(BlockOutChannels[0] % 2 == 0 && TimeEmbedDim > 0, "block_out_channels[0] must be even (sinusoidal timestep features).");
        Require(TimeEmbeddingType != "fourier" || TimeEmbedDim % 2 == 0, $"a fourier time embedding must be even, got {TimeEmbedDim}.");
        Require(NumClassEmbeds is null or > 0, $"num_class_embeds must be positive, got {NumClassEmbeds}.");
        if (ClassEmbedType is "projection" or "simple_projection")
            Require(ProjectionClassEmbeddingsInputDim is > 0, $"class_embed_type \"{ClassEmbedType}\" needs a positive projection_class_embeddings_input_dim.");
        Require(TimeCondProjDim is null or > 0, $"time_cond_proj_dim must be positive, got {TimeCondProjDim}.");
        Require(MidBlockScaleFactor != 0, "mid_block_scale_factor must not be zero.");
        var heads = HeadsPerBlock;
        Require(heads.All(h => h > 0), "attention_head_dim (the head count) must be positive.");
        for (int i = 0; i < n; i++)
            Require(BlockOutChannels[i] / heads[i] > 0, $"block {i} has {BlockOutChannels[i]} channels, fewer than its {heads[i]} heads.");
        Require(CrossAttentionDim.Expand(n, "cross_attention_dim").All(d => d > 0), "cross_attention_dim must be positive.");
        Require(LayersPerBlock.Expand(n, "layers_per_block").All(l => l > 0), "layers_per_block must be positive.");
        Require(TransformerLayersPerBlock.Expand(n, "transformer_layers_per_block").All(l => l > 0), "transformer_layers_per_block must be positive.");
        OnlyCrossAttention.Expand(n, "only_cross_attention");
    }
}
