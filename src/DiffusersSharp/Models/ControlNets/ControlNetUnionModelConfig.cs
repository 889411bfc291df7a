namespace DiffusersSharp.Models.ControlNets;

/// <summary>
/// <c>config.json</c> of diffusers' <c>ControlNetUnionModel</c> (SDXL ControlNet-Union, e.g. xinsir/controlnet-union-sdxl-1.0):
/// a <see cref="ControlNetModelConfig"/> (the UNet's down path and mid block, described the same way) plus the condition
/// transformer's sizes. Defaults are the Python constructor's, whose conditioning embedding channels differ from
/// <c>ControlNetModel</c>'s: (48, 96, 192, 384).
/// </summary>
public sealed record ControlNetUnionModelConfig : ControlNetModelConfig
{
    /// <summary>Sets the union constructor's own default conditioning embedding channels.</summary>
    public ControlNetUnionModelConfig() => ConditioningEmbeddingOutChannels = [48, 96, 192, 384];

    /// <summary>How many control types (modes) the model knows: 6 for xinsir's union model, 8 for its ProMax version
    /// (tile and repaint); the modes a call may use are 0 to num_control_type - 1.</summary>
    public int NumControlType { get; init; } = 6;

    /// <summary>Width of the condition transformer (<c>task_embedding</c>, <c>transformer_layes</c>); the condition
    /// features it reads are block_out_channels[0] wide, so it must equal that.</summary>
    public int NumTransChannel { get; init; } = 320;

    /// <summary>Attention heads of the condition transformer.</summary>
    public int NumTransHead { get; init; } = 8;

    /// <summary>Layers (<c>ResidualAttentionBlock</c>s) of the condition transformer.</summary>
    public int NumTransLayer { get; init; } = 1;

    /// <summary>Output width of <c>spatial_ch_projs</c>, added to the block_out_channels[0]-channel conditions, so it must equal that.</summary>
    public int NumProjChannel { get; init; } = 320;

    /// <inheritdoc />
    protected override string ModelClass => "ControlNetUnionModel";

    /// <summary>
    /// Checks the config as <see cref="ControlNetModelConfig.Validate"/> does, and what the union model adds: the condition
    /// transformer's sizes, addition_time_embed_dim (the control types are embedded with it) and rgb channel order (the
    /// only one diffusers' union model runs).
    /// </summary>
    /// <exception cref="NotSupportedException">An option this port (or diffusers' forward) does not implement is set.</exception>
    /// <exception cref="ArgumentException">The config is inconsistent.</exception>
    public override void Validate()
    {
        if (MidBlockType != "UNetMidBlock2DCrossAttn")
            throw new NotSupportedException($"ControlNetUnionModel config: mid_block_type = {MidBlockType ?? "null"} is not supported (diffusers' union model always builds UNetMidBlock2DCrossAttn).");
        if (ControlnetConditioningChannelOrder != "rgb")
            throw new NotSupportedException($"ControlNetUnionModel config: controlnet_conditioning_channel_order = {ControlnetConditioningChannelOrder} is not supported (diffusers' union model takes rgb only).");
        base.Validate();
        static void Require(bool ok, string message)
        {
            if (!ok) throw new ArgumentException("ControlNetUnionModel config: " + message);
        }
        Require(AdditionTimeEmbedDim is > 0 && AdditionTimeEmbedDim % 2 == 0,
            "addition_time_embed_dim must be a positive even number: the control types are embedded with that many sinusoidal features each.");
        Require(NumControlType > 0, $"num_control_type must be positive, got {NumControlType}.");
        Require(NumTransLayer >= 0, $"num_trans_layer must not be negative, got {NumTransLayer}.");
        Require(NumTransHead > 0 && NumTransChannel > 0 && NumTransChannel % NumTransHead == 0,
            $"num_trans_channel ({NumTransChannel}) must be a positive multiple of num_trans_head ({NumTransHead}).");
        Require(NumTransChannel == BlockOutChannels[0],
            $"num_trans_channel ({NumTransChannel}) must equal block_out_channels[0] ({BlockOutChannels[0]}): the transformer reads the conditions' mean features.");
        Require(NumProjChannel == BlockOutChannels[0],
            $"num_proj_channel ({NumProjChannel}) must equal block_out_channels[0] ({BlockOutChannels[0]}): spatial_ch_projs' output is added to the conditions.");
    }
}
