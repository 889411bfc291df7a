using DiffusersSharp.Models.Unets;

namespace DiffusersSharp.Loaders;

/// <summary>
/// Where each diffusers UNet module sits in the original SGM / LDM <c>UNetModel</c> (<c>input_blocks.4.1</c>,
/// <c>middle_block.1</c>, <c>output_blocks.2.2.conv</c>), derived from the UNet's config. Shared by the kohya LoRA
/// names (<see cref="KohyaModuleNames"/>, with <c>_</c> for <c>.</c>) and the single-file UNet converter.
/// </summary>
internal static class LdmUnetLayout
{
    /// <summary>The layers of an LDM ResBlock under their diffusers names (diffusers' <c>renew_resnet_paths</c>).</summary>
    public static IReadOnlyDictionary<string, string> ResnetLayers { get; } = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["norm1"] = "in_layers.0", ["conv1"] = "in_layers.2", ["time_emb_proj"] = "emb_layers.1",
        ["norm2"] = "out_layers.0", ["conv2"] = "out_layers.3", ["conv_shortcut"] = "skip_connection",
    };

    /// <summary>
    /// Diffusers module prefix -> LDM prefix, walking the blocks as SGM's UNetModel builds them: input_blocks 0 is
    /// conv_in, then per down block <c>layers_per_block</c> entries (resnet <c>.0</c>, attention <c>.1</c> for
    /// cross-attention blocks) and a downsampler entry (<c>.0.op</c>) except after the last; the middle block is resnet,
    /// attention, resnet; output_blocks hold <c>layers_per_block + 1</c> entries per up block, the last one ending with the
    /// upsampler (<c>.1</c> after a resnet alone, <c>.2</c> after resnet and attention). Entries whose value names a
    /// whole module (conv_in, samplers, embeddings, the output norm and conv) map a module; the others a resnet or an
    /// attention block whose inner names follow.
    /// </summary>
    public static Dictionary<string, string> Prefixes(UNet2DConditionModelConfig config)
    {
        int n = config.DownBlockTypes.Length;
        var layers = config.LayersPerBlock.Expand(n, "layers_per_block");
        var map = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["conv_in"] = "input_blocks.0.0", ["time_embedding.linear_1"] = "time_embed.0", ["time_embedding.linear_2"] = "time_embed.2",
            ["add_embedding.linear_1"] = "label_emb.0.0", ["add_embedding.linear_2"] = "label_emb.0.2",
            ["conv_norm_out"] = "out.0", ["conv_out"] = "out.2",
        };
        int index = 1;
        for (int b = 0; b < n; b++)
        {
            bool attention = config.DownBlockTypes[b] == "CrossAttnDownBlock2D";
            for (int l = 0; l < layers[b]; l++, index++)
            {
                map[$"down_blocks.{b}.resnets.{l}"] = $"input_blocks.{index}.0";
                if (attention) map[$"down_blocks.{b}.attentions.{l}"] = $"input_blocks.{index}.1";
            }
            if (b < n - 1) map[$"down_blocks.{b}.downsamplers.0.conv"] = $"input_blocks.{index++}.0.op";
        }
        if (config.MidBlockType is not null)
        {
            map["mid_block.resnets.0"] = "middle_block.0";
            map["mid_block.attentions.0"] = "middle_block.1";
            map["mid_block.resnets.1"] = "middle_block.2";
        }
        index = 0;
        for (int b = 0; b < n; b++)
        {
            bool attention = config.UpBlockTypes[b] == "CrossAttnUpBlock2D";
            int count = layers[n - 1 - b] + 1;
            for (int l = 0; l < count; l++, index++)
            {
                map[$"up_blocks.{b}.resnets.{l}"] = $"output_blocks.{index}.0";
                if (attention) map[$"up_blocks.{b}.attentions.{l}"] = $"output_blocks.{index}.1";
                if (l == count - 1 && b < n - 1) map[$"up_blocks.{b}.upsamplers.0.conv"] = $"output_blocks.{index}.{(attention ? 2 : 1)}.conv";
            }
        }
        return map;
    }

    /// <summary>Whether the diffusers prefix <paramref name="prefix"/> names a resnet (whose inner layers are renamed).</summary>
    public static bool IsResnet(string prefix) => prefix.Contains(".resnets.", StringComparison.Ordinal);
}
