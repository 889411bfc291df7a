using DiffusersSharp.Models.Unets;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Loaders;

/// <summary>
/// Resolves the layer names of kohya sd-scripts LoRAs (<c>lora_unet_down_blocks_0_attentions_0_proj_in</c>: a module
/// path with <c>_</c> for <c>.</c>) against a model's real modules. Underscores are ambiguous in general
/// (<c>to_out_0</c>, <c>transformer_blocks</c>), so names are never split by rules: every Linear and Conv2d of the model
/// is listed under its path with <c>.</c> replaced by <c>_</c>, and a name is looked up in that table. For a UNet the
/// table also holds each module's name in the original SGM / LDM layout (<c>input_blocks_4_1_...</c>,
/// <c>middle_block_1_...</c>, <c>output_blocks_2_2_conv</c>) that SDXL kohya files use, derived from the UNet's config.
/// </summary>
internal static class KohyaModuleNames
{
    /// <summary>Kohya layer name (without <c>lora_unet_</c> / <c>lora_te_</c>) -> module path; null where two modules share a name.</summary>
    public static Dictionary<string, string?> Table(nn.Module model)
    {
        var sgm = model is UNet2DConditionModel unet ? SgmPrefixes(unet.Config) : null;
        var table = new Dictionary<string, string?>(StringComparer.Ordinal);
        foreach (var (name, module) in model.named_modules())
        {
            if (module is not (Linear or Conv2d)) continue;
            Add(table, name.Replace('.', '_'), name);
            if (sgm is not null && SgmName(sgm, name) is { } sgmName) Add(table, sgmName, name);
        }
        return table;
    }

    private static void Add(Dictionary<string, string?> table, string key, string module)
    {
        if (table.TryGetValue(key, out var existing) && existing != module) table[key] = null;
        else table[key] = module;
    }

    // LDM ResBlock layers under their diffusers names.
    private static readonly Dictionary<string, string> ResnetLayers = new(StringComparer.Ordinal)
    {
        ["conv1"] = "in_layers_2", ["conv2"] = "out_layers_3", ["time_emb_proj"] = "emb_layers_1", ["conv_shortcut"] = "skip_connection",
    };

    /// <summary>
    /// Diffusers module prefix -> SGM name prefix, walking the blocks as SGM's UNetModel builds them: input_blocks 0 is
    /// conv_in, then per down block <c>layers_per_block</c> entries (resnet <c>_0</c>, attention <c>_1</c> for
    /// cross-attention blocks) and a downsampler entry (<c>_0_op</c>) except after the last; the middle block is resnet,
    /// attention, resnet; output_blocks hold <c>layers_per_block + 1</c> entries per up block, the last one ending with the
    /// upsampler (<c>_1</c> after a resnet alone, <c>_2</c> after resnet and attention).
    /// </summary>
    internal static Dictionary<string, string> SgmPrefixes(UNet2DConditionModelConfig config)
    {
        int n = config.DownBlockTypes.Length;
        var layers = config.LayersPerBlock.Expand(n, "layers_per_block");
        var map = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["conv_in"] = "input_blocks_0_0", ["time_embedding.linear_1"] = "time_embed_0", ["time_embedding.linear_2"] = "time_embed_2",
            ["add_embedding.linear_1"] = "label_emb_0_0", ["add_embedding.linear_2"] = "label_emb_0_2", ["conv_out"] = "out_2",
        };
        int index = 1;
        for (int b = 0; b < n; b++)
        {
            bool attention = config.DownBlockTypes[b] == "CrossAttnDownBlock2D";
            for (int l = 0; l < layers[b]; l++, index++)
            {
                map[$"down_blocks.{b}.resnets.{l}"] = $"input_blocks_{index}_0";
                if (attention) map[$"down_blocks.{b}.attentions.{l}"] = $"input_blocks_{index}_1";
            }
            if (b < n - 1) map[$"down_blocks.{b}.downsamplers.0.conv"] = $"input_blocks_{index++}_0_op";
        }
        if (config.MidBlockType is not null)
        {
            map["mid_block.resnets.0"] = "middle_block_0";
            map["mid_block.attentions.0"] = "middle_block_1";
            map["mid_block.resnets.1"] = "middle_block_2";
        }
        index = 0;
        for (int b = 0; b < n; b++)
        {
            bool attention = config.UpBlockTypes[b] == "CrossAttnUpBlock2D";
            int count = layers[n - 1 - b] + 1;
            for (int l = 0; l < count; l++, index++)
            {
                map[$"up_blocks.{b}.resnets.{l}"] = $"output_blocks_{index}_0";
                if (attention) map[$"up_blocks.{b}.attentions.{l}"] = $"output_blocks_{index}_1";
                if (l == count - 1 && b < n - 1) map[$"up_blocks.{b}.upsamplers.0.conv"] = $"output_blocks_{index}_{(attention ? 2 : 1)}_conv";
            }
        }
        return map;
    }

    private static string? SgmName(Dictionary<string, string> prefixes, string module)
    {
        // The longest mapped prefix: a resnet or attention block, or a whole module (conv_in, samplers, embeddings).
        for (int end = module.Length; end > 0; end = module.LastIndexOf('.', end - 1))
        {
            if (!prefixes.TryGetValue(module[..end], out var sgm)) continue;
            if (end == module.Length) return sgm;
            string rest = module[(end + 1)..];
            if (module[..end].Contains(".resnets.", StringComparison.Ordinal))
                return ResnetLayers.TryGetValue(rest, out var layer) ? $"{sgm}_{layer}" : null;
            return $"{sgm}_{rest.Replace('.', '_')}";
        }
        return null;
    }
}
