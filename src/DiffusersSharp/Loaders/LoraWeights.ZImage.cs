using System.Text.RegularExpressions;
using DiffusersSharp.IO;
using DiffusersSharp.Models.Transformers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Loaders;

public sealed partial class LoraWeights
{
    private const string ZImageDown = ".lora_down.weight", ZImageUp = ".lora_up.weight", ZImageA = ".lora_A.weight", ZImageB = ".lora_B.weight";

    /// <summary>diffusers' <c>normalize_out_key</c>: an attention output named <c>out</c> before a kohya part is <c>to_out.0</c>.</summary>
    private static readonly Regex ZImageOut = new(@"\.out(?=\.(?:lora_down|lora_up)\.weight$|\.alpha$)");

    /// <summary>
    /// diffusers' <c>ZImageLoraLoaderMixin.load_lora_weights(path)</c> + <c>fuse_lora(lora_scale=scale)</c> on a Z-Image
    /// transformer: the file is read as <see cref="LoadZImage"/> reads it, checked against the transformer before any weight
    /// changes, and fused through the same path as every other LoRA. Returns the number of adapted layers.
    /// </summary>
    /// <remarks>With <paramref name="fused"/>, the file's matrices are kept there so that the fuse can be undone.</remarks>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file is not a Z-Image transformer LoRA in a layout diffusers reads.</exception>
    /// <exception cref="ArgumentException">A layer does not fit the transformer (missing modules or other sizes), or the scale is not finite.</exception>
    public static int FuseZImage(string path, ZImageTransformer2DModel transformer, double scale = 1.0, FusedLoras? fused = null)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        return FuseParts(path, LoadZImage, new Dictionary<string, nn.Module?> { ["transformer"] = transformer }, scale, kohya: false, fused);
    }

    /// <summary>
    /// Reads a Z-Image LoRA file as diffusers' <c>ZImageLoraLoaderMixin.lora_state_dict</c> does. A file with none of
    /// the keys its converter (<c>_convert_non_diffusers_z_image_lora_to_diffusers</c>) looks for is read as
    /// <see cref="LoadAll"/> reads it (diffusers' own layout, <c>transformer.*.lora_A.weight</c>). A file with a
    /// <c>.alpha</c> tensor, a <c>diffusion_model.</c> prefix or PEFT's <c>default.</c> adapter name in a key is converted
    /// as diffusers converts it: the <c>diffusion_model.</c> prefix dropped, a module named <c>out</c> before a kohya part
    /// read as <c>to_out.0</c>, every <c>default.</c> removed; then either <c>lora_down</c> / <c>lora_up</c> / <c>alpha</c>
    /// triples (the alpha required; its <c>alpha / r</c> multiplies the layer, on top of PEFT's scaling) or
    /// <c>lora_A</c> / <c>lora_B</c> pairs (their alphas dropped, as diffusers drops them). The module paths are the
    /// transformer's own; PEFT's scaling is the adapter metadata's when the file has it, else diffusers' default
    /// (the rank of the first converted pair over each layer's own). The result has one part, <c>transformer</c>.
    /// </summary>
    /// <remarks>
    /// Refused with a clear error, as diffusers v0.36 refuses or cannot load them: kohya <c>lora_unet_</c> names (its
    /// converter splits <c>.lora_down</c> at the underscore and raises), a <c>lora_down</c> without its <c>lora_up</c> or
    /// its <c>.alpha</c>, <c>lora_down</c> and <c>lora_A</c> pairs in one file, and any other tensor (a <c>lora_B</c>
    /// bias, LyCORIS parts). DoRA files (<c>dora_scale</c>) are refused too: diffusers drops those tensors with a warning
    /// and loads the rest as a plain LoRA, which is not the trained adapter.
    /// </remarks>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">A key diffusers' Z-Image loader does not read, or an incomplete or mis-shaped pair.</exception>
    public static IReadOnlyDictionary<string, LoraWeights> LoadZImage(string path) =>
        LoadConvertedTransformer(path, "Z-Image", name => name.Contains(".to_out", StringComparison.Ordinal) ? name : ZImageOut.Replace(name, ".to_out.0"),
            kohya: null);

    /// <summary>
    /// What diffusers' Z-Image and Qwen-Image LoRA converters share (<c>_convert_non_diffusers_z_image_lora_to_diffusers</c>,
    /// <c>_convert_non_diffusers_qwen_lora_to_diffusers</c>): the <c>diffusion_model.</c> prefix dropped, kohya's
    /// <c>lora_unet_</c> names turned into module paths by <paramref name="kohya"/> (null: refused, as diffusers' Z-Image
    /// converter cannot read them), each name passed through <paramref name="normalize"/>, PEFT's <c>default.</c> removed,
    /// then lora_down / lora_up / alpha triples or lora_A / lora_B pairs (see <see cref="LoadZImage"/>). A file with none of
    /// the keys the converters look for is read as <see cref="LoadAll"/> reads it.
    /// </summary>
    private static IReadOnlyDictionary<string, LoraWeights> LoadConvertedTransformer(string path, string family, Func<string, string> normalize,
        Func<string, string>? kohya)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"LoRA file not found: {path}", path);
        using var file = SafetensorsFile.Open(path);
        var keys = file.Tensors.Keys.ToList();
        RefuseDora(path, keys);
        bool convert = keys.Any(k => k.EndsWith(".alpha", StringComparison.Ordinal) || k.StartsWith(ComfyPrefix, StringComparison.Ordinal)
            || k.StartsWith("lora_unet_", StringComparison.Ordinal) || k.Contains("default.", StringComparison.Ordinal));
        if (!convert) return LoadAll(path);

        // converted name -> the file's key, in diffusers' order of steps.
        var names = keys.Select(k => (Key: k, Name: k.StartsWith(ComfyPrefix, StringComparison.Ordinal) ? k[ComfyPrefix.Length..] : k)).ToList();
        var kohyaNames = names.Where(n => n.Name.StartsWith("lora_unet_", StringComparison.Ordinal)).Select(n => n.Key).ToList();
        if (kohyaNames.Count > 0 && kohya is null)
            throw new InvalidDataException($"{path} names {family} layers kohya's way ({string.Join(", ", kohyaNames.Take(2))}), which diffusers v0.36 cannot load (its {family} converter splits '.lora_down' at the underscore and then raises); not supported. A file with the transformer's module paths (diffusion_model.layers.0.attention.to_q.lora_down.weight, or diffusers' transformer.*.lora_A.weight) is.");
        // diffusers strips lora_unet_ from every key once any key has it, then converts them all.
        if (kohyaNames.Count > 0) names = names.Select(n => (Key: n.Key, Name: kohya!(n.Name.StartsWith("lora_unet_", StringComparison.Ordinal) ? n.Name["lora_unet_".Length..] : n.Name))).ToList();
        var converted = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, name) in names)
        {
            string n = normalize(name).Replace("default.", "", StringComparison.Ordinal);
            if (!converted.TryAdd(n, key))
                throw new InvalidDataException($"{path}: '{converted[n]}' and '{key}' are both '{n}' once converted as diffusers converts {family} LoRAs.");
        }

        bool kohyaPairs = converted.Keys.Any(k => k.Contains(ZImageDown, StringComparison.Ordinal) || k.Contains(ZImageUp, StringComparison.Ordinal));
        var pairs = new List<(string Layer, LayerKeys Keys, string? Alpha)>();
        var used = new HashSet<string>(StringComparer.Ordinal);
        string Stem(string key, string suffix) => converted[key][..^suffix.Length];
        if (kohyaPairs)
        {
            foreach (var down in converted.Keys.Where(k => k.EndsWith(ZImageDown, StringComparison.Ordinal) && k.Length > ZImageDown.Length))
            {
                string layer = down[..^ZImageDown.Length], up = layer + ZImageUp, alpha = layer + ".alpha";
                if (!converted.TryGetValue(up, out var upKey))
                    throw new InvalidDataException($"{path}: {converted[down]} has no lora_up.weight beside it.");
                if (!converted.TryGetValue(alpha, out var alphaKey))
                    throw new InvalidDataException($"{path}: {converted[down]} has no .alpha beside it; diffusers' {family} loader needs one for every lora_down / lora_up pair.");
                var pair = new LayerKeys(Stem(down, ZImageDown));
                pair.Set(Part.Down, converted[down]);
                pair.Set(Part.Up, upKey);
                pairs.Add((layer, pair, alphaKey));
                used.UnionWith([down, up, alpha]);
            }
        }
        else
        {
            var byLayer = new Dictionary<string, LayerKeys>(StringComparer.Ordinal);
            foreach (var name in converted.Keys)
            {
                (string Suffix, Part? Part) match = name.EndsWith(ZImageA, StringComparison.Ordinal) ? (ZImageA, Part.Down)
                    : name.EndsWith(ZImageB, StringComparison.Ordinal) ? (ZImageB, Part.Up) : ("", null);
                if (match is (var suffix, { } p) && name.Length > suffix.Length)
                {
                    string layer = name[..^suffix.Length];
                    if (!byLayer.TryGetValue(layer, out var pair)) byLayer[layer] = pair = new LayerKeys(Stem(name, suffix));
                    pair.Set(p, converted[name]);
                    used.Add(name);
                }
                // diffusers drops the alphas of lora_A / lora_B pairs (its default alpha applies).
                else if (name.Contains(".alpha", StringComparison.Ordinal)) used.Add(name);
            }
            var incomplete = byLayer.Values.Where(p => p.Down is null || p.Up is null).Select(p => p.Stem).ToList();
            if (incomplete.Count > 0)
                throw new InvalidDataException($"{path}: a lora_A without its lora_B or the reverse, for {string.Join(", ", incomplete.Take(3))}.");
            pairs.AddRange(byLayer.Select(p => (p.Key, p.Value, (string?)null)));
        }
        var left = converted.Where(p => !used.Contains(p.Key)).Select(p => p.Value).ToList();
        if (left.Count > 0)
            throw new InvalidDataException($"{path}: {left.Count} tensor(s) diffusers' {family} LoRA converter does not read ({(kohyaPairs ? "lora_down / lora_up / alpha files take nothing else" : "only lora_A / lora_B pairs and their alphas")}: no lora_B bias, no lora_A beside lora_down, no LyCORIS parts), e.g. {string.Join(", ", left.Take(3))}.");
        if (pairs.Count == 0) throw new InvalidDataException($"{path} has no lora_A / lora_down tensors.");

        // PEFT's lora_alpha without metadata: the rank of the first lora_B of the converted dict, which follows the file's
        // order (the lora_down triples' by their down tensor).
        var first = pairs.OrderBy(p => file.Tensors[kohyaPairs ? p.Keys.Down! : p.Keys.Up!].Begin).First().Keys.Up!;
        long? defaultAlpha = file.Tensors[first].Shape is { Length: > 1 } s ? s[1] : null;
        var metadata = LoraAdapterMetadata.Read(path, file.Header.Metadata);
        var lora = new LoraWeights("transformer", LoraKeyFormat.Peft);
        try
        {
            foreach (var (layer, pair, alphaKey) in pairs.OrderBy(p => p.Layer, StringComparer.Ordinal))
            {
                lora.ReadLayer(path, file, layer, pair, metadata, defaultAlpha);
                if (alphaKey is null) continue;
                var info = file.Tensors[alphaKey];
                if (info.ElementCount != 1)
                    throw new InvalidDataException($"{path}: {alphaKey} is [{string.Join(", ", info.Shape)}]; an alpha is a single number.");
                using var a = file.Read(alphaKey, ScalarType.Float32);
                // The converter multiplies the pair by alpha / r (split between down and up), before PEFT's own scaling.
                lora._scales[layer] *= a.item<float>() / lora._layers[layer].Down.shape[0];
            }
        }
        catch
        {
            lora.Dispose();
            throw;
        }
        return new Dictionary<string, LoraWeights>(StringComparer.Ordinal) { ["transformer"] = lora };
    }
}
