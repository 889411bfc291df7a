using System.Text.RegularExpressions;
using DiffusersSharp.IO;
using DiffusersSharp.Models.Transformers;
using static TorchSharp.torch;

namespace DiffusersSharp.Loaders;

public sealed partial class LoraWeights
{
    /// <summary>
    /// The rows of the original layout's fused qkv lora_B that diffusers' converter gives to_q, to_k and to_v: fixed at
    /// Lumina-Image-2.0's widths (24 heads and 8 key / value heads of 96), whatever the file or the model.
    /// </summary>
    private static readonly (string Module, long Rows)[] Lumina2QkvSplit = [("attn.to_q", 2304), ("attn.to_k", 768), ("attn.to_v", 768)];

    /// <summary>The original layout's other block modules and diffusers' names for them, in the converter's order.</summary>
    private static readonly (string Original, string Module)[] Lumina2BlockParts =
        [("attention.out", "attn.to_out.0"), ("feed_forward.w1", "feed_forward.linear_1"), ("feed_forward.w2", "feed_forward.linear_2"),
         ("feed_forward.w3", "feed_forward.linear_3")];

    /// <summary>The block lists the converter walks, in its order, and whether their blocks have an adaLN modulation.</summary>
    private static readonly (string Prefix, bool Modulation)[] Lumina2Blocks = [("noise_refiner", true), ("context_refiner", false), ("layers", true)];

    /// <summary>
    /// diffusers' <c>Lumina2LoraLoaderMixin.load_lora_weights(path)</c> + <c>fuse_lora(lora_scale=scale)</c> on a Lumina2
    /// transformer: the file is read as <see cref="LoadLumina2"/> reads it, checked against the transformer before any
    /// weight changes, and fused through the same path as every other LoRA. Returns the number of adapted layers.
    /// </summary>
    /// <inheritdoc cref="FuseSana" path="/remarks"/>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file is not a Lumina2 transformer LoRA in a layout diffusers reads.</exception>
    /// <exception cref="ArgumentException">A layer does not fit the transformer (missing modules or other sizes), or the scale is not finite.</exception>
    public static int FuseLumina2(string path, Lumina2Transformer2DModel transformer, double scale = 1.0, FusedLoras? fused = null) =>
        FuseTransformerOnly(path, LoadLumina2, transformer, scale, fused);

    /// <summary>
    /// Reads a Lumina2 LoRA file as diffusers' <c>Lumina2LoraLoaderMixin.lora_state_dict</c> does. A file with a
    /// <c>diffusion_model.</c> key is Lumina's original training layout, converted as
    /// <c>_convert_non_diffusers_lumina2_lora_to_diffusers</c> converts it: for each block of <c>noise_refiner</c>,
    /// <c>context_refiner</c> and <c>layers</c> (numbered from 0, as many as the file has indices), the fused
    /// <c>attention.qkv</c> pair becomes to_q / to_k / to_v (its lora_A shared, its lora_B split into 2304 / 768 / 768
    /// rows, Lumina-Image-2.0's widths), <c>attention.out</c> to_out.0, <c>feed_forward.w1..w3</c> linear_1..3 and, but in
    /// the context refiner, <c>adaLN_modulation.1</c> norm1.linear; lora_A / lora_B pairs only, PEFT's scaling from the
    /// adapter metadata or diffusers' default (the rank of the first block's qkv over each layer's own). Any other file is
    /// read as <see cref="LoadSana"/> reads it (diffusers' own layout, the same refusals).
    /// </summary>
    /// <remarks>
    /// The original layout is refused, as diffusers' converter raises on it, when a block lacks one of its pairs (or the
    /// indices skip one), a tensor is left over (an alpha, a lora_B bias, a key of another layout), a key does not start
    /// with <c>diffusion_model.</c> (the converter cuts that many characters off every key), or the qkv lora_B does not
    /// have 3840 rows (the split above: such a file is for another width than Lumina-Image-2.0's). DoRA files are refused.
    /// </remarks>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">A key diffusers' Lumina2 loader does not read, or an incomplete or mis-shaped pair.</exception>
    public static IReadOnlyDictionary<string, LoraWeights> LoadLumina2(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"LoRA file not found: {path}", path);
        using var file = SafetensorsFile.Open(path);
        var keys = file.Tensors.Keys.ToList();
        RefuseDora(path, keys);
        if (!keys.Any(k => k.StartsWith(ComfyPrefix, StringComparison.Ordinal))) return LoadDiffusersLayoutTransformer(path, "Lumina2");

        var strangers = keys.Where(k => !k.StartsWith(ComfyPrefix, StringComparison.Ordinal)).ToList();
        if (strangers.Count > 0)
            throw new InvalidDataException($"{path} mixes Lumina's original layout (diffusion_model.*) with {strangers.Count} other key(s) (e.g. {string.Join(", ", strangers.Take(2))}), on which diffusers' Lumina2 converter raises.");
        var left = keys.Select(k => k[ComfyPrefix.Length..]).ToHashSet(StringComparer.Ordinal);
        // (diffusers module, file's lora_A key, file's lora_B key, rows of lora_B taken), in the converter's order.
        var pairs = new List<(string Module, string Down, string Up, long Start, long? Rows)>();
        foreach (var (prefix, modulation) in Lumina2Blocks)
        {
            // As the converter: the number of distinct indices found anywhere in a key, then blocks 0 .. n-1.
            var pattern = new Regex($@"{prefix}\.(\d+)\.");
            int count = left.Select(k => pattern.Match(k)).Where(m => m.Success).Select(m => m.Groups[1].Value).Distinct().Count();
            for (int i = 0; i < count; i++)
            {
                string block = $"{prefix}.{i}";
                (string Down, string Up) Take(string part)
                {
                    string down = $"{block}.{part}.lora_A.weight", up = $"{block}.{part}.lora_B.weight";
                    foreach (var name in (string[])[down, up])
                        if (!left.Remove(name))
                            throw new InvalidDataException($"{path}: Lumina's original layout without {ComfyPrefix}{name}; diffusers' Lumina2 converter needs the qkv, out, w1, w2, w3{(modulation ? " and adaLN_modulation.1" : "")} lora_A / lora_B pairs of every {prefix} block 0 .. {count - 1}, and raises.");
                    return (ComfyPrefix + down, ComfyPrefix + up);
                }
                var (qkvDown, qkvUp) = Take("attention.qkv");
                long start = 0;
                foreach (var (module, rows) in Lumina2QkvSplit)
                {
                    pairs.Add(($"{block}.{module}", qkvDown, qkvUp, start, rows));
                    start += rows;
                }
                foreach (var (original, module) in Lumina2BlockParts)
                {
                    var (down, up) = Take(original);
                    pairs.Add(($"{block}.{module}", down, up, 0, null));
                }
                if (modulation)
                {
                    var (down, up) = Take("adaLN_modulation.1");
                    pairs.Add(($"{block}.norm1.linear", down, up, 0, null));
                }
            }
        }
        if (left.Count > 0)
            throw new InvalidDataException($"{path}: {left.Count} tensor(s) diffusers' Lumina2 converter does not read (only the lora_A / lora_B pairs of attention.qkv, attention.out, feed_forward.w1..w3 and adaLN_modulation.1; no alphas, no lora_B bias), e.g. {string.Join(", ", left.Take(3).Select(k => ComfyPrefix + k))}; it raises on them.");
        if (pairs.Count == 0) throw new InvalidDataException($"{path} has no Lumina2 blocks (diffusion_model.layers.N / noise_refiner.N / context_refiner.N).");
        foreach (var qkv in pairs.Where(p => p.Rows is not null).Select(p => p.Up).Distinct())
        {
            var shape = file.Tensors[qkv].Shape;
            long total = Lumina2QkvSplit.Sum(s => s.Rows);
            if (shape.Length != 2 || shape[0] != total)
                throw new InvalidDataException($"{path}: {qkv} is [{string.Join(", ", shape)}]; diffusers' Lumina2 converter splits the fused qkv's lora_B into {string.Join(" / ", Lumina2QkvSplit.Select(s => s.Rows))} rows (Lumina-Image-2.0's to_q / to_k / to_v), so it raises on {(shape.Length == 2 ? shape[0] : 0)} rows: this file is not for Lumina-Image-2.0's width.");
        }

        // PEFT's lora_alpha without metadata: the rank of the first converted lora_B (the first block's to_q).
        var firstUp = file.Tensors[pairs[0].Up].Shape;
        long? defaultAlpha = firstUp.Length > 1 ? firstUp[1] : null;
        var metadata = LoraAdapterMetadata.Read(path, file.Header.Metadata);
        var lora = new LoraWeights("transformer", LoraKeyFormat.Peft);
        try
        {
            foreach (var (module, downKey, upKey, start, rows) in pairs)
            {
                var down = file.Read(downKey, ScalarType.Float32);
                Tensor up;
                try
                {
                    using var whole = file.Read(upKey, ScalarType.Float32);
                    up = rows is { } n ? whole.narrow(0, start, n).clone() : whole.clone();
                }
                catch
                {
                    down.Dispose();
                    throw;
                }
                lora._layers[module] = (down, up);
                lora._sources[module] = upKey[..^".lora_B.weight".Length];
                if (down.dim() != 2 || up.dim() != 2 || up.shape[1] != down.shape[0])
                    throw new InvalidDataException($"{path}: {downKey} is [{string.Join(", ", down.shape)}] and {upKey} [{string.Join(", ", file.Tensors[upKey].Shape)}]; expected [r, in] and [out, r].");
                long rank = down.shape[0];
                lora._scales[module] = (float)(metadata?.Scaling(path, "transformer", module, rank) ?? (double)(defaultAlpha ?? rank) / rank);
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
