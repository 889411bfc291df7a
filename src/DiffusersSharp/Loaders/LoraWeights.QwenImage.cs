using DiffusersSharp.Models.Transformers;
using TorchSharp;

namespace DiffusersSharp.Loaders;

public sealed partial class LoraWeights
{
    /// <summary>diffusers' top-level Qwen-Image modules in kohya's flattened names, which its converter maps first.</summary>
    private static readonly (string Flat, string Dotted)[] QwenKohyaTopLevel =
    [
        ("img_in", "img_in"), ("txt_in", "txt_in"), ("proj_out", "proj_out"), ("norm_out_linear", "norm_out.linear"),
        ("time_text_embed_timestep_embedder_linear_1", "time_text_embed.timestep_embedder.linear_1"),
        ("time_text_embed_timestep_embedder_linear_2", "time_text_embed.timestep_embedder.linear_2"),
    ];

    /// <summary>Module names whose underscores kohya's flattening must keep (diffusers' protected n-grams), longest first.</summary>
    private static readonly string[][] QwenKohyaProtected =
    [
        ["add", "q", "proj"], ["add", "k", "proj"], ["add", "v", "proj"], ["to", "add", "out"],
        ["to", "q"], ["to", "k"], ["to", "v"], ["to", "out"], ["add", "q"], ["add", "k"], ["add", "v"],
        ["txt", "mlp"], ["img", "mlp"], ["txt", "mod"], ["img", "mod"],
    ];

    /// <summary>
    /// diffusers' <c>QwenImageLoraLoaderMixin.load_lora_weights(path)</c> + <c>fuse_lora(lora_scale=scale)</c> on a
    /// Qwen-Image transformer: the file is read as <see cref="LoadQwenImage"/> reads it, checked against the transformer
    /// before any weight changes, and fused through the same path as every other LoRA. Returns the number of adapted layers.
    /// </summary>
    /// <remarks>With <paramref name="fused"/>, the file's matrices are kept there so that the fuse can be undone.</remarks>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file is not a Qwen-Image transformer LoRA in a layout diffusers reads.</exception>
    /// <exception cref="ArgumentException">A layer does not fit the transformer (missing modules or other sizes), or the scale is not finite.</exception>
    public static int FuseQwenImage(string path, QwenImageTransformer2DModel transformer, double scale = 1.0, FusedLoras? fused = null)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        return FuseParts(path, LoadQwenImage, new Dictionary<string, torch.nn.Module?> { ["transformer"] = transformer }, scale, kohya: false, fused);
    }

    /// <summary>
    /// Reads a Qwen-Image LoRA file as diffusers' <c>QwenImageLoraLoaderMixin.lora_state_dict</c> does: diffusers' own
    /// layout (<c>transformer.*.lora_A.weight</c>) as is; a file with a <c>.alpha</c> tensor, a <c>diffusion_model.</c>
    /// prefix, kohya's <c>lora_unet_</c> names or PEFT's <c>default.</c> adapter name converted as
    /// <c>_convert_non_diffusers_qwen_lora_to_diffusers</c> converts it (kohya's flattened names back to module paths with
    /// its table of top-level modules and protected names such as <c>to_add_out</c> or <c>img_mod</c>; lora_down / lora_up
    /// triples scaled by their required alpha / r; lora_A / lora_B pairs with their alphas dropped). The same refusals as
    /// <see cref="LoadZImage"/> (DoRA, a missing alpha or partner, tensors the converter does not read).
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">A key diffusers' Qwen-Image loader does not read, or an incomplete or mis-shaped pair.</exception>
    public static IReadOnlyDictionary<string, LoraWeights> LoadQwenImage(string path) =>
        LoadConvertedTransformer(path, "Qwen-Image", name => name, QwenKohyaName);

    /// <summary>diffusers' <c>convert_key</c> for kohya's Qwen-Image names (the <c>lora_unet_</c> prefix already removed).</summary>
    internal static string QwenKohyaName(string key)
    {
        foreach (var (flat, dotted) in QwenKohyaTopLevel)
            if (key == flat || key.StartsWith(flat + ".", StringComparison.Ordinal)) return dotted + key[flat.Length..];
        int lastDot = key.LastIndexOf('.');
        string @base = lastDot < 0 ? key : key[..lastDot], suffix = lastDot < 0 ? "" : key[(lastDot + 1)..];
        const string Prefix = "transformer_blocks";
        // As diffusers: the block prefix is assumed and cut by its length, whatever the key holds there.
        string rest = @base.Length > Prefix.Length + 1 ? @base[(Prefix.Length + 1)..] : "";
        int dot = rest.IndexOf('.');
        string head = dot < 0 ? rest : rest[..dot], tail = dot < 0 ? "" : rest[dot..];
        var parts = head.Split('_');
        var merged = new List<string>();
        for (int i = 0; i < parts.Length;)
        {
            var match = QwenKohyaProtected.FirstOrDefault(ngram => i + ngram.Length <= parts.Length && ngram.SequenceEqual(parts[i..(i + ngram.Length)]));
            merged.Add(match is null ? parts[i] : string.Join("_", match));
            i += match?.Length ?? 1;
        }
        string converted = $"{Prefix}.{string.Join(".", merged)}{tail}";
        return suffix.Length > 0 ? $"{converted}.{suffix}" : converted;
    }
}
