using DiffusersSharp.Models.Transformers;

namespace DiffusersSharp.Loaders;

/// <summary>Rows <c>[Start, Start + Count)</c> of a LoRA up matrix (or its bias).</summary>
internal readonly record struct RowRange(long Start, long Count);

/// <summary>
/// One diffusers module a layer of the original Flux layout becomes: its path and the rows of the original layer's up
/// matrix that make its output (null: all of them, in order).
/// </summary>
internal sealed record LayoutTarget(string Module, RowRange[]? Rows);

/// <summary>
/// The module names of Black Forest Labs' original Flux layout (<c>double_blocks.0.img_attn.qkv</c>,
/// <c>single_blocks.3.linear1</c>, <c>final_layer.adaLN_modulation.1</c>), which BFL's own LoRAs (FLUX.1-Canny-dev-lora,
/// FLUX.1-Depth-dev-lora), kohya sd-scripts' Flux LoRAs (<c>lora_unet_double_blocks_0_img_attn_qkv</c>) and XLabs' (named
/// after the same modules) use, resolved
/// against a <see cref="FluxTransformer2DModel"/> as diffusers' converters do: a fused QKV layer is the model's Q, K and V
/// (the up matrix split in thirds, the down matrix shared), <c>linear1</c> of a single block is Q, K, V and
/// <c>proj_mlp</c>, and the final modulation's rows swap halves (BFL orders it shift, scale; diffusers scale, shift).
/// Names are written with <c>_</c> for <c>.</c> (kohya's form; BFL's dotted names are converted before lookup).
/// Unlike diffusers' converters, which assume FLUX.1's 19 / 38 blocks of width 3072, the sizes come from the model.
/// </summary>
internal static class FluxOriginalLayout
{
    /// <summary>Layer name -> the diffusers modules it becomes.</summary>
    public static Dictionary<string, LayoutTarget[]> Layers(FluxTransformer2DModelConfig config)
    {
        long d = config.InnerDim, mlp = 4 * d; // FluxSingleTransformerBlock's mlp_ratio 4
        var table = new Dictionary<string, LayoutTarget[]>(StringComparer.Ordinal)
        {
            ["img_in"] = [Whole("x_embedder")],
            ["txt_in"] = [Whole("context_embedder")],
            ["time_in_in_layer"] = [Whole("time_text_embed.timestep_embedder.linear_1")],
            ["time_in_out_layer"] = [Whole("time_text_embed.timestep_embedder.linear_2")],
            ["vector_in_in_layer"] = [Whole("time_text_embed.text_embedder.linear_1")],
            ["vector_in_out_layer"] = [Whole("time_text_embed.text_embedder.linear_2")],
            ["final_layer_linear"] = [Whole("proj_out")],
            ["final_layer_adaLN_modulation_1"] = [new("norm_out.linear", [new(d, d), new(0, d)])],
        };
        if (config.GuidanceEmbeds)
        {
            table["guidance_in_in_layer"] = [Whole("time_text_embed.guidance_embedder.linear_1")];
            table["guidance_in_out_layer"] = [Whole("time_text_embed.guidance_embedder.linear_2")];
        }
        for (int i = 0; i < config.NumLayers; i++)
        {
            string bfl = $"double_blocks_{i}_", ours = $"transformer_blocks.{i}.";
            table[bfl + "img_mod_lin"] = [Whole(ours + "norm1.linear")];
            table[bfl + "txt_mod_lin"] = [Whole(ours + "norm1_context.linear")];
            table[bfl + "img_attn_qkv"] = Split(ours + "attn.", ["to_q", "to_k", "to_v"], d, d, d);
            table[bfl + "txt_attn_qkv"] = Split(ours + "attn.", ["add_q_proj", "add_k_proj", "add_v_proj"], d, d, d);
            table[bfl + "img_attn_proj"] = [Whole(ours + "attn.to_out.0")];
            table[bfl + "txt_attn_proj"] = [Whole(ours + "attn.to_add_out")];
            table[bfl + "img_mlp_0"] = [Whole(ours + "ff.net.0.proj")];
            table[bfl + "img_mlp_2"] = [Whole(ours + "ff.net.2")];
            table[bfl + "txt_mlp_0"] = [Whole(ours + "ff_context.net.0.proj")];
            table[bfl + "txt_mlp_2"] = [Whole(ours + "ff_context.net.2")];
        }
        for (int i = 0; i < config.NumSingleLayers; i++)
        {
            string bfl = $"single_blocks_{i}_", ours = $"single_transformer_blocks.{i}.";
            table[bfl + "modulation_lin"] = [Whole(ours + "norm.linear")];
            table[bfl + "linear1"] = Split(ours, ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"], d, d, d, mlp);
            table[bfl + "linear2"] = [Whole(ours + "proj_out")];
            // Not a BFL module: XLabs' single-block LoRA adapts only the Q, K, V part of linear1 (its qkv_lora).
            table[bfl + "linear1_qkv"] = Split(ours, ["attn.to_q", "attn.to_k", "attn.to_v"], d, d, d);
        }
        return table;
    }

    /// <summary>
    /// QK-norm scale name (<c>double_blocks_0_img_attn_norm_query_norm_scale</c>) -> the diffusers parameter it replaces
    /// (<c>transformer_blocks.0.attn.norm_q.weight</c>), as BFL's control LoRAs carry them.
    /// </summary>
    public static Dictionary<string, string> NormScales(FluxTransformer2DModelConfig config)
    {
        var table = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < config.NumLayers; i++)
        {
            string bfl = $"double_blocks_{i}_", ours = $"transformer_blocks.{i}.attn.";
            table[bfl + "img_attn_norm_query_norm_scale"] = ours + "norm_q.weight";
            table[bfl + "img_attn_norm_key_norm_scale"] = ours + "norm_k.weight";
            table[bfl + "txt_attn_norm_query_norm_scale"] = ours + "norm_added_q.weight";
            table[bfl + "txt_attn_norm_key_norm_scale"] = ours + "norm_added_k.weight";
        }
        for (int i = 0; i < config.NumSingleLayers; i++)
        {
            string bfl = $"single_blocks_{i}_norm_", ours = $"single_transformer_blocks.{i}.attn.";
            table[bfl + "query_norm_scale"] = ours + "norm_q.weight";
            table[bfl + "key_norm_scale"] = ours + "norm_k.weight";
        }
        return table;
    }

    private static LayoutTarget Whole(string module) => new(module, null);

    private static LayoutTarget[] Split(string prefix, string[] modules, params long[] rows)
    {
        var targets = new LayoutTarget[modules.Length];
        long start = 0;
        for (int i = 0; i < modules.Length; i++)
        {
            targets[i] = new LayoutTarget(prefix + modules[i], [new RowRange(start, rows[i])]);
            start += rows[i];
        }
        return targets;
    }
}
