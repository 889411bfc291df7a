using DiffusersSharp.IO;
using DiffusersSharp.Models.Transformers;
using static TorchSharp.torch;

namespace DiffusersSharp.Loaders;

public sealed partial class LoraWeights
{
    /// <summary>
    /// diffusers' <c>SanaLoraLoaderMixin.load_lora_weights(path)</c> + <c>fuse_lora(lora_scale=scale)</c> on a Sana
    /// transformer: the file is read as <see cref="LoadSana"/> reads it, checked against the transformer before any weight
    /// changes, and fused through the same path as every other LoRA. Returns the number of adapted layers.
    /// </summary>
    /// <remarks>With <paramref name="fused"/>, the file's matrices are kept there so that the fuse can be undone.</remarks>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file is not a Sana transformer LoRA in a layout diffusers reads.</exception>
    /// <exception cref="ArgumentException">A layer does not fit the transformer (missing modules or other sizes), or the scale is not finite.</exception>
    public static int FuseSana(string path, SanaTransformer2DModel transformer, double scale = 1.0, FusedLoras? fused = null) =>
        FuseTransformerOnly(path, LoadSana, transformer, scale, fused);

    /// <summary>
    /// diffusers' <c>AuraFlowLoraLoaderMixin.load_lora_weights(path)</c> + <c>fuse_lora(lora_scale=scale)</c> on an
    /// AuraFlow transformer; see <see cref="FuseSana"/> and <see cref="LoadAuraFlow"/>.
    /// </summary>
    /// <inheritdoc cref="FuseSana" path="/remarks"/>
    /// <inheritdoc cref="FuseSana" path="/exception"/>
    public static int FuseAuraFlow(string path, AuraFlowTransformer2DModel transformer, double scale = 1.0, FusedLoras? fused = null) =>
        FuseTransformerOnly(path, LoadAuraFlow, transformer, scale, fused);

    /// <summary>
    /// diffusers' <c>CogView4LoraLoaderMixin.load_lora_weights(path)</c> + <c>fuse_lora(lora_scale=scale)</c> on a
    /// CogView4 transformer; see <see cref="FuseSana"/> and <see cref="LoadCogView4"/>.
    /// </summary>
    /// <inheritdoc cref="FuseSana" path="/remarks"/>
    /// <inheritdoc cref="FuseSana" path="/exception"/>
    public static int FuseCogView4(string path, CogView4Transformer2DModel transformer, double scale = 1.0, FusedLoras? fused = null) =>
        FuseTransformerOnly(path, LoadCogView4, transformer, scale, fused);

    /// <summary>
    /// Reads a Sana LoRA file as diffusers' <c>SanaLoraLoaderMixin</c> does, which converts nothing: diffusers' own layout
    /// only (<c>transformer.&lt;module&gt;.lora_A.weight</c> / <c>.lora_B.weight</c>, optionally <c>.lora_B.bias</c>, a conv's
    /// pair 4-D), PEFT's scaling from the adapter metadata when the file has it, else diffusers' default (the rank of the
    /// first lora_B read, over each layer's own). The result has one part, <c>transformer</c>.
    /// </summary>
    /// <remarks>
    /// Refused with a clear error: a tensor without <c>lora</c> in its name (an <c>.alpha</c>: diffusers raises "Invalid
    /// LoRA checkpoint"), a key outside <c>transformer.</c> (PEFT's <c>base_model.model.</c>, kohya's <c>lora_unet_</c>,
    /// ComfyUI's <c>diffusion_model.</c>: diffusers' loader keeps only <c>transformer.</c> keys, so it loads nothing from
    /// such a file, or silently less than the file holds), and DoRA files (diffusers drops their <c>dora_scale</c> and
    /// loads the rest as a plain LoRA, which is not the trained adapter).
    /// </remarks>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">A key diffusers' Sana loader does not read, or an incomplete or mis-shaped pair.</exception>
    public static IReadOnlyDictionary<string, LoraWeights> LoadSana(string path) => LoadDiffusersLayoutTransformer(path, "Sana");

    /// <summary>Reads an AuraFlow LoRA file as diffusers' <c>AuraFlowLoraLoaderMixin</c> does: diffusers' own layout only, as
    /// <see cref="LoadSana"/> (the same refusals).</summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">A key diffusers' AuraFlow loader does not read, or an incomplete or mis-shaped pair.</exception>
    public static IReadOnlyDictionary<string, LoraWeights> LoadAuraFlow(string path) => LoadDiffusersLayoutTransformer(path, "AuraFlow");

    /// <summary>Reads a CogView4 LoRA file as diffusers' <c>CogView4LoraLoaderMixin</c> does: diffusers' own layout only, as
    /// <see cref="LoadSana"/> (the same refusals).</summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">A key diffusers' CogView4 loader does not read, or an incomplete or mis-shaped pair.</exception>
    public static IReadOnlyDictionary<string, LoraWeights> LoadCogView4(string path) => LoadDiffusersLayoutTransformer(path, "CogView4");

    /// <summary>What the transformer-only loaders share: read, check against <paramref name="transformer"/>, then fuse.</summary>
    private static int FuseTransformerOnly(string path, Func<string, IReadOnlyDictionary<string, LoraWeights>> read, nn.Module transformer,
        double scale, FusedLoras? fused)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        return FuseParts(path, read, new Dictionary<string, nn.Module?> { ["transformer"] = transformer }, scale, kohya: false, fused);
    }

    /// <summary>
    /// diffusers' loaders that convert nothing (CogVideoX's <c>load_lora_weights</c>, which Sana's, AuraFlow's and Lumina2's
    /// copy): every key must hold <c>lora</c> (else diffusers raises), and only <c>transformer.</c> keys are loaded, so a
    /// file with any other key is refused rather than loaded in part or not at all. Then read as <see cref="LoadAll"/> reads it.
    /// </summary>
    private static IReadOnlyDictionary<string, LoraWeights> LoadDiffusersLayoutTransformer(string path, string family)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"LoRA file not found: {path}", path);
        using (var file = SafetensorsFile.Open(path))
            CheckDiffusersLayoutKeys(path, family, file.Tensors.Keys.ToList());
        var parts = LoadAll(path);
        if (parts.Count == 1 && parts.TryGetValue("transformer", out var lora) && lora.Format == LoraKeyFormat.Peft) return parts;
        foreach (var part in parts.Values) part.Dispose();
        throw new InvalidDataException($"{path} is not in diffusers' own {family} LoRA layout (transformer.<module>.lora_A.weight / lora_B.weight).");
    }

    /// <summary>The key checks of <see cref="LoadDiffusersLayoutTransformer"/>, before any tensor is read.</summary>
    private static void CheckDiffusersLayoutKeys(string path, string family, List<string> keys)
    {
        RefuseDora(path, keys);
        var noLora = keys.Where(k => !k.Contains("lora", StringComparison.Ordinal)).ToList();
        if (noLora.Count > 0)
            throw new InvalidDataException($"{path}: {noLora.Count} key(s) without 'lora' in the name (e.g. {string.Join(", ", noLora.Take(3))}), which diffusers' {family} loader refuses (\"Invalid LoRA checkpoint\"): its layout is transformer.<module>.lora_A.weight / lora_B.weight, the alphas in the adapter metadata.");
        var outside = keys.Where(k => !k.StartsWith("transformer.", StringComparison.Ordinal)).ToList();
        if (outside.Count > 0)
            throw new InvalidDataException(outside.Count == keys.Count
                ? $"{path} has no transformer.* keys (e.g. {string.Join(", ", outside.Take(2))}): diffusers' {family} loader reads only diffusers' own layout (transformer.<module>.lora_A.weight / lora_B.weight) and would load nothing from this file."
                : $"{path}: {outside.Count} key(s) outside transformer.* (e.g. {string.Join(", ", outside.Take(2))}), which diffusers' {family} loader skips (it reads transformer.* keys only); refused rather than loaded in part.");
    }
}
