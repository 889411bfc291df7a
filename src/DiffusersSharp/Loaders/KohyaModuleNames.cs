using DiffusersSharp.Models.Unets;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

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

    /// <summary>Diffusers module prefix -> SGM name prefix (<see cref="LdmUnetLayout.Prefixes"/> with <c>_</c> for <c>.</c>).</summary>
    internal static Dictionary<string, string> SgmPrefixes(UNet2DConditionModelConfig config) =>
        LdmUnetLayout.Prefixes(config).ToDictionary(kv => kv.Key, kv => kv.Value.Replace('.', '_'), StringComparer.Ordinal);

    private static string? SgmName(Dictionary<string, string> prefixes, string module)
    {
        // The longest mapped prefix: a resnet or attention block, or a whole module (conv_in, samplers, embeddings).
        for (int end = module.Length; end > 0; end = module.LastIndexOf('.', end - 1))
        {
            if (!prefixes.TryGetValue(module[..end], out var sgm)) continue;
            if (end == module.Length) return sgm;
            string rest = module[(end + 1)..];
            if (LdmUnetLayout.IsResnet(module[..end]))
                return LdmUnetLayout.ResnetLayers.TryGetValue(rest, out var layer) ? $"{sgm}_{layer.Replace('.', '_')}" : null;
            return $"{sgm}_{rest.Replace('.', '_')}";
        }
        return null;
    }
}
