using System.Globalization;
using DiffusersSharp.IO;
using DiffusersSharp.Models.Transformers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Loaders;

public sealed partial class LoraWeights
{
    private const string Flux2KohyaPrefix = "lora_unet_";

    /// <summary>diffusers' own FLUX.2 block names under <c>diffusion_model.</c>, kept as they are (<c>sformer_blocks</c> an alias).</summary>
    private static readonly (string From, string To)[] Flux2ExpandedPrefixes =
        [("single_transformer_blocks.", "single_transformer_blocks."), ("transformer_blocks.", "transformer_blocks."), ("sformer_blocks.", "transformer_blocks.")];

    /// <summary>A double block's unfused BFL modules and their diffusers names, in the order diffusers' converter maps them.</summary>
    private static readonly (string Bfl, string Module)[] Flux2DoubleModules =
    [
        ("img_attn.proj", "attn.to_out.0"), ("txt_attn.proj", "attn.to_add_out"),
        ("img_mlp.0", "ff.linear_in"), ("img_mlp.2", "ff.linear_out"), ("txt_mlp.0", "ff_context.linear_in"), ("txt_mlp.2", "ff_context.linear_out"),
    ];

    /// <summary>The top-level BFL modules diffusers' ai-toolkit converter maps, in its order.</summary>
    private static readonly (string Bfl, string Module)[] Flux2TopLevel =
    [
        ("img_in", "x_embedder"), ("txt_in", "context_embedder"),
        ("time_in.in_layer", "time_guidance_embed.timestep_embedder.linear_1"), ("time_in.out_layer", "time_guidance_embed.timestep_embedder.linear_2"),
        ("guidance_in.in_layer", "time_guidance_embed.guidance_embedder.linear_1"), ("guidance_in.out_layer", "time_guidance_embed.guidance_embedder.linear_2"),
        ("final_layer.linear", "proj_out"), ("final_layer.adaLN_modulation.1", "norm_out.linear"),
        ("single_stream_modulation.lin", "single_stream_modulation.linear"),
        ("double_stream_modulation_img.lin", "double_stream_modulation_img.linear"),
        ("double_stream_modulation_txt.lin", "double_stream_modulation_txt.linear"),
    ];

    /// <summary>The top-level modules diffusers' kohya converter maps (fewer than the ai-toolkit one), in its order.</summary>
    private static readonly (string Kohya, string Module)[] Flux2KohyaTopLevel =
    [
        ("img_in", "x_embedder"), ("txt_in", "context_embedder"), ("time_in_in_layer", "time_guidance_embed.timestep_embedder.linear_1"),
        ("time_in_out_layer", "time_guidance_embed.timestep_embedder.linear_2"), ("final_layer_linear", "proj_out"),
    ];

    /// <summary>
    /// One converted layer: the module it adapts, the file's tensors, which third of a fused QKV it is (<c>Third</c> 0-2,
    /// -1: all of it; <c>Sparse</c>: a block-diagonal kohya QKV, whose down rows and up columns are split too) and the
    /// factor a kohya converter multiplies in (its alpha / r).
    /// </summary>
    private sealed record Flux2Layer(string Module, string Source, string DownKey, string UpKey, int Third, bool Sparse, double Factor);

    /// <summary>
    /// diffusers' <c>Flux2LoraLoaderMixin.load_lora_weights(path)</c> + <c>fuse_lora(lora_scale=scale)</c> on a FLUX.2
    /// transformer: the file is read as <see cref="LoadFlux2"/> reads it, checked against the transformer before any weight
    /// changes, and fused through the same path as every other LoRA. Returns the number of adapted layers of the file
    /// once converted (a fused QKV counts three).
    /// </summary>
    /// <remarks>With <paramref name="fused"/>, the file's matrices are kept there so that the fuse can be undone.</remarks>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file is not a FLUX.2 transformer LoRA in a layout diffusers reads.</exception>
    /// <exception cref="ArgumentException">A layer does not fit the transformer (missing modules or other sizes), or the scale is not finite.</exception>
    public static int FuseFlux2(string path, Flux2Transformer2DModel transformer, double scale = 1.0, FusedLoras? fused = null)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        return FuseParts(path, LoadFlux2, new Dictionary<string, nn.Module?> { ["transformer"] = transformer }, scale, kohya: false, fused);
    }

    /// <summary>
    /// Reads a FLUX.2 LoRA file as diffusers v0.39's <c>Flux2LoraLoaderMixin.lora_state_dict</c> does, into one part,
    /// <c>transformer</c>, named by the transformer's module paths:
    /// <list type="bullet">
    /// <item>a file with a <c>.lora_down.weight</c> key: kohya's names (<c>lora_unet_double_blocks_0_img_attn_qkv</c>,
    /// <c>lora_unet_single_blocks_0_linear1</c>, <c>lora_unet_img_in</c> ...) as <c>_convert_kohya_flux2_lora_to_diffusers</c>
    /// converts them: each pair times its <c>alpha / r</c> (the alpha the rank when the file has none), a fused QKV's up
    /// split in three over one shared down, or, when its up is block-diagonal (rank a multiple of 3, the blocks off the
    /// diagonal all zero), into three pairs of a third of the rank;</item>
    /// <item>a file with <c>diffusion_model.</c> keys (ai-toolkit; PEFT's <c>base_model.model.</c> read as that): BFL's names
    /// as <c>_convert_non_diffusers_flux2_lora_to_diffusers</c> converts them: <c>double_blocks.N.img_attn.qkv</c> /
    /// <c>txt_attn.qkv</c> into to_q / to_k / to_v or add_q_proj / add_k_proj / add_v_proj (lora_A shared, lora_B split in
    /// three), proj, mlp, <c>single_blocks.N.linear1</c> / <c>linear2</c>, the embedders, final layer and modulations; and
    /// diffusers' own block names there (<c>transformer_blocks</c>, <c>single_transformer_blocks</c>, the alias
    /// <c>sformer_blocks</c>) as they are;</item>
    /// <item>any other file: diffusers' own layout (<c>transformer.*.lora_A.weight</c> / <c>lora_B.weight</c>), read as
    /// <see cref="LoadAll"/> reads it.</item>
    /// </list>
    /// PEFT's scaling is the adapter metadata's when the file has it, else diffusers' default: the rank of the first lora_B
    /// of the converted dict over each layer's own.
    /// </summary>
    /// <remarks>
    /// Refused with a clear error, as diffusers v0.39 raises or loads nothing or not all of it: a tensor its converter does
    /// not map (an <c>.alpha</c> or PEFT <c>default.</c> name beside <c>diffusion_model.</c> keys, modules such as
    /// <c>img_mod.lin</c>; in kohya files, which diffusers drops with a warning, <c>lora_unet_double_blocks_0_img_mod_lin</c>
    /// or ComfyUI's <c>diffusion_model.*.lora_down.weight</c>), a lora_down without its lora_up, <c>.alpha</c> tensors in
    /// diffusers' own layout ("all LoRA param names contain 'lora'"), BFL names without a prefix and PEFT <c>default.</c>
    /// names in diffusers' layout (diffusers loads nothing from those), and DoRA files (<c>dora_scale</c>; diffusers drops
    /// those tensors and loads the rest as a plain LoRA, which is not the trained adapter).
    /// </remarks>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">A key diffusers' FLUX.2 loader does not read, or an incomplete or mis-shaped pair.</exception>
    public static IReadOnlyDictionary<string, LoraWeights> LoadFlux2(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"LoRA file not found: {path}", path);
        List<Flux2Layer> layers;
        using (var file = SafetensorsFile.Open(path))
        {
            // diffusers' state dict follows the file's order, which decides its default alpha.
            var keys = file.Tensors.Values.OrderBy(t => t.Begin).Select(t => t.Name).ToList();
            RefuseDora(path, keys);
            if (keys.Any(k => k.Contains(".lora_down.weight", StringComparison.Ordinal))) layers = Flux2KohyaLayers(path, file, keys);
            else if (keys.Any(k => k.Replace(FalPrefix, ComfyPrefix, StringComparison.Ordinal).StartsWith(ComfyPrefix, StringComparison.Ordinal)))
                layers = Flux2AiToolkitLayers(path, keys);
            else
            {
                var noLora = keys.Where(k => !k.Contains("lora", StringComparison.Ordinal)).ToList();
                if (noLora.Count > 0)
                    throw new InvalidDataException($"{path}: {noLora.Count} key(s) without 'lora' in the name (e.g. {string.Join(", ", noLora.Take(3))}), which diffusers' FLUX.2 loader refuses (\"all LoRA param names contain 'lora'\"): diffusers' own layout has lora_A / lora_B tensors only, its alphas in the adapter metadata.");
                layers = [];
            }
            if (layers.Count > 0) return Flux2Weights(path, file, layers);
        }
        var all = LoadAll(path);
        if (all.Values.All(l => l.Format == LoraKeyFormat.Peft)) return all;
        var format = all.Values.First(l => l.Format != LoraKeyFormat.Peft).Format;
        foreach (var lora in all.Values) lora.Dispose();
        throw new InvalidDataException($"{path} names its layers in a layout diffusers' FLUX.2 loader loads nothing from ({format} names without the diffusion_model. prefix); FLUX.2 files name BFL modules as diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight, kohya's as lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight, or diffusers' as transformer.transformer_blocks.0.attn.to_q.lora_A.weight.");
    }

    /// <summary>Refuses a DoRA file: diffusers drops its <c>dora_scale</c> tensors and loads the rest as a plain LoRA.</summary>
    private static void RefuseDora(string path, IEnumerable<string> keys)
    {
        var dora = keys.Where(k => k.Contains("dora_scale", StringComparison.Ordinal)).ToList();
        if (dora.Count > 0)
            throw new InvalidDataException($"{path} is a DoRA LoRA ({string.Join(", ", dora.Take(2))}); DoRA is not supported (diffusers drops the dora_scale tensors and loads the rest as a plain LoRA).");
    }

    /// <summary>The highest block index + 1 of the names that start with <paramref name="prefix"/>, the index at <paramref name="part"/> after splitting at <paramref name="separator"/>.</summary>
    private static int Flux2BlockCount(string path, IEnumerable<string> names, string prefix, char separator, int part)
    {
        int count = 0;
        foreach (var name in names.Where(n => n.StartsWith(prefix, StringComparison.Ordinal)))
        {
            var parts = name.Split(separator);
            if (parts.Length <= part || !int.TryParse(parts[part], NumberStyles.None, CultureInfo.InvariantCulture, out int index))
                throw new InvalidDataException($"{path}: '{name}' has no block number where diffusers' FLUX.2 converter reads one.");
            count = Math.Max(count, index + 1);
        }
        return count;
    }

    /// <summary>diffusers' <c>_convert_non_diffusers_flux2_lora_to_diffusers</c>, as the layers it makes (see <see cref="LoadFlux2"/>).</summary>
    private static List<Flux2Layer> Flux2AiToolkitLayers(string path, List<string> keys)
    {
        var names = keys.Select(k => (Key: k, Name: k.Replace(FalPrefix, ComfyPrefix, StringComparison.Ordinal))).ToList();
        var foreign = names.Where(n => !n.Name.StartsWith(ComfyPrefix, StringComparison.Ordinal)).Select(n => n.Key).ToList();
        if (foreign.Count > 0)
            throw new InvalidDataException($"{path} mixes diffusion_model. keys with others ({string.Join(", ", foreign.Take(3))}), which diffusers' FLUX.2 converter cannot read (it cuts the prefix's length off every key, then raises on what is left).");
        // The file's stripped name -> its key, what the converter has not mapped yet.
        var left = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, name) in names) left[name[ComfyPrefix.Length..]] = key;
        if (left.Keys.Any(n => n.Contains("lora_down", StringComparison.Ordinal) || n.Contains("lora_up", StringComparison.Ordinal)))
            left = left.ToDictionary(p => p.Key.Replace("lora_down", "lora_A", StringComparison.Ordinal).Replace("lora_up", "lora_B", StringComparison.Ordinal), p => p.Value, StringComparer.Ordinal);

        // The converted dict in diffusers' order: (converted name, file key, third of a fused QKV or -1).
        var converted = new List<(string Name, string Key, int Third)>();
        bool Take(string original, string name, int third = -1)
        {
            if (!left.TryGetValue(original, out var key)) return false;
            converted.Add((name, key, third));
            return true;
        }
        foreach (var name in left.Keys.ToList())
        {
            var (from, to) = Flux2ExpandedPrefixes.FirstOrDefault(p => name.StartsWith(p.From, StringComparison.Ordinal));
            if (from is null) continue;
            converted.Add((to + name[from.Length..], left[name], -1));
            left.Remove(name);
        }
        int singles = Flux2BlockCount(path, left.Keys, "single_blocks.", '.', 1), doubles = Flux2BlockCount(path, left.Keys, "double_blocks.", '.', 1);
        string[] parts = ["lora_A", "lora_B"];
        var used = new HashSet<string>(StringComparer.Ordinal);
        void Map(string original, string name)
        {
            if (Take(original, name)) used.Add(original);
        }
        for (int i = 0; i < singles; i++)
            foreach (var p in parts)
            {
                Map($"single_blocks.{i}.linear1.{p}.weight", $"single_transformer_blocks.{i}.attn.to_qkv_mlp_proj.{p}.weight");
                Map($"single_blocks.{i}.linear2.{p}.weight", $"single_transformer_blocks.{i}.attn.to_out.{p}.weight");
            }
        for (int i = 0; i < doubles; i++)
        {
            foreach (var p in parts)
                foreach (var (stream, projections) in new[] { ("img_attn", new[] { "to_q", "to_k", "to_v" }), ("txt_attn", new[] { "add_q_proj", "add_k_proj", "add_v_proj" }) })
                {
                    string original = $"double_blocks.{i}.{stream}.qkv.{p}.weight";
                    // lora_A is every projection's; lora_B's rows are q, k, v in thirds.
                    for (int t = 0; t < 3; t++)
                        if (Take(original, $"transformer_blocks.{i}.attn.{projections[t]}.{p}.weight", p == "lora_A" ? -1 : t)) used.Add(original);
                }
            foreach (var (bfl, module) in Flux2DoubleModules)
                foreach (var p in parts) Map($"double_blocks.{i}.{bfl}.{p}.weight", $"transformer_blocks.{i}.{module}.{p}.weight");
        }
        foreach (var (bfl, module) in Flux2TopLevel)
            foreach (var p in parts) Map($"{bfl}.{p}.weight", $"{module}.{p}.weight");
        var unmapped = left.Where(p => !used.Contains(p.Key)).Select(p => p.Value).ToList();
        if (unmapped.Count > 0)
            throw new InvalidDataException($"{path}: {unmapped.Count} tensor(s) diffusers' FLUX.2 converter does not map, and raises on (it maps only lora_A.weight / lora_B.weight of BFL's double_blocks qkv / proj / mlp, single_blocks linear1 / linear2, img_in, txt_in, time_in, guidance_in, final_layer and the stream modulations, and diffusers' own block names; no .alpha, no PEFT default. names), e.g. {string.Join(", ", unmapped.Take(3))}.");

        // The converted names are module + .lora_A.weight / .lora_B.weight; anything else diffusers refuses or loads nothing from.
        var pairs = new Dictionary<string, (string? Down, string? Up, int Third)>(StringComparer.Ordinal);
        var order = new List<string>();
        foreach (var (name, key, third) in converted)
        {
            bool down = name.EndsWith(ZImageA, StringComparison.Ordinal), up = name.EndsWith(ZImageB, StringComparison.Ordinal);
            if (!down && !up || name.Length <= ZImageA.Length)
                throw new InvalidDataException($"{path}: '{key}' is not a lora_A.weight / lora_B.weight tensor; diffusers' FLUX.2 loader {(name.Contains("lora", StringComparison.Ordinal) ? "does not load it (PEFT default. names, lora_B biases)" : "refuses it (\"all LoRA param names contain 'lora'\")")}.");
            string module = name[..^ZImageA.Length];
            var entry = pairs.GetValueOrDefault(module, (null, null, -1));
            if ((down ? entry.Down : entry.Up) is { } other)
                throw new InvalidDataException($"{path}: '{other}' and '{key}' are both {module}'s {(down ? "lora_A" : "lora_B")} once converted as diffusers converts FLUX.2 LoRAs.");
            pairs[module] = down ? (key, entry.Up, entry.Third) : (entry.Down, key, third);
            if (up) order.Add(module);
        }
        var incomplete = pairs.Where(p => p.Value.Down is null || p.Value.Up is null).Select(p => p.Key).ToList();
        if (incomplete.Count > 0)
            throw new InvalidDataException($"{path}: a lora_A without its lora_B or the reverse, for {string.Join(", ", incomplete.Take(3))}.");
        return order.Select(m => new Flux2Layer(m, pairs[m].Up![..^ZImageB.Length], pairs[m].Down!, pairs[m].Up!, pairs[m].Third, false, 1.0)).ToList();
    }

    /// <summary>diffusers' <c>_convert_kohya_flux2_lora_to_diffusers</c>, as the layers it makes (see <see cref="LoadFlux2"/>).</summary>
    private static List<Flux2Layer> Flux2KohyaLayers(string path, SafetensorsFile file, List<string> keys)
    {
        var left = new HashSet<string>(keys, StringComparer.Ordinal);
        var layers = new List<Flux2Layer>();
        void Convert(string kohya, params string[] modules)
        {
            string stem = Flux2KohyaPrefix + kohya, down = stem + ".lora_down.weight", up = stem + ".lora_up.weight", alpha = stem + ".alpha";
            if (!left.Remove(down)) return;
            if (!left.Remove(up)) throw new InvalidDataException($"{path}: {down} has no lora_up.weight beside it.");
            var downInfo = file.Tensors[down];
            if (downInfo.Shape.Length != 2) throw new InvalidDataException($"{path}: {down} is [{string.Join(", ", downInfo.Shape)}]; a lora_down is [r, in].");
            long rank = downInfo.Shape[0];
            double a = rank;
            if (left.Remove(alpha))
            {
                if (file.Tensors[alpha].ElementCount != 1)
                    throw new InvalidDataException($"{path}: {alpha} is [{string.Join(", ", file.Tensors[alpha].Shape)}]; an alpha is a single number.");
                using var t = file.Read(alpha, ScalarType.Float64);
                a = t.item<double>();
            }
            double factor = a / rank;
            if (modules.Length == 1)
            {
                layers.Add(new Flux2Layer(modules[0], stem, down, up, -1, false, factor));
                return;
            }
            bool sparse = Flux2SparseQkv(path, file, up, rank);
            for (int t = 0; t < 3; t++) layers.Add(new Flux2Layer(modules[t], stem, down, up, t, sparse, factor));
        }
        int doubles = Flux2BlockCount(path, keys, "lora_unet_double_blocks_", '_', 4), singles = Flux2BlockCount(path, keys, "lora_unet_single_blocks_", '_', 4);
        for (int i = 0; i < doubles; i++)
        {
            string block = $"transformer_blocks.{i}";
            Convert($"double_blocks_{i}_img_attn_proj", $"{block}.attn.to_out.0");
            Convert($"double_blocks_{i}_img_attn_qkv", $"{block}.attn.to_q", $"{block}.attn.to_k", $"{block}.attn.to_v");
            Convert($"double_blocks_{i}_txt_attn_proj", $"{block}.attn.to_add_out");
            Convert($"double_blocks_{i}_txt_attn_qkv", $"{block}.attn.add_q_proj", $"{block}.attn.add_k_proj", $"{block}.attn.add_v_proj");
            Convert($"double_blocks_{i}_img_mlp_0", $"{block}.ff.linear_in");
            Convert($"double_blocks_{i}_img_mlp_2", $"{block}.ff.linear_out");
            Convert($"double_blocks_{i}_txt_mlp_0", $"{block}.ff_context.linear_in");
            Convert($"double_blocks_{i}_txt_mlp_2", $"{block}.ff_context.linear_out");
        }
        for (int i = 0; i < singles; i++)
        {
            Convert($"single_blocks_{i}_linear1", $"single_transformer_blocks.{i}.attn.to_qkv_mlp_proj");
            Convert($"single_blocks_{i}_linear2", $"single_transformer_blocks.{i}.attn.to_out");
        }
        foreach (var (kohya, module) in Flux2KohyaTopLevel) Convert(kohya, module);
        if (left.Count > 0)
        {
            var rest = keys.Where(left.Contains).ToList();
            throw new InvalidDataException(rest.Any(k => k.StartsWith(ComfyPrefix, StringComparison.Ordinal))
                ? $"{path} has diffusion_model.*.lora_down.weight keys (ComfyUI's layout, e.g. {rest.First(k => k.StartsWith(ComfyPrefix, StringComparison.Ordinal))}), from which diffusers' FLUX.2 loader loads nothing (its kohya converter reads lora_unet_ names only and drops the rest with a warning); not supported."
                : $"{path}: {rest.Count} tensor(s) diffusers' FLUX.2 kohya converter does not map (it drops them with a warning, so the LoRA would not be the trained one: it maps lora_unet_double_blocks_N_img_attn_qkv / _proj, txt_attn_qkv / _proj, img_mlp_0 / _2, txt_mlp_0 / _2, single_blocks_N_linear1 / linear2, img_in, txt_in, time_in_in_layer / out_layer, final_layer_linear; an alpha or lora_up needs its lora_down), e.g. {string.Join(", ", rest.Take(3))}.");
        }
        if (layers.Count == 0) throw new InvalidDataException($"{path} has no lora_down tensors diffusers' FLUX.2 kohya converter maps.");
        return layers;
    }

    /// <summary>
    /// diffusers' kohya test for a fused QKV made of three independent pairs: the rank a multiple of 3 and the up's blocks
    /// off the diagonal (q rows x k / v columns ...) exactly zero.
    /// </summary>
    private static bool Flux2SparseQkv(string path, SafetensorsFile file, string upKey, long rank)
    {
        var info = file.Tensors[upKey];
        if (info.Shape.Length != 2 || info.Shape[0] % 3 != 0 || info.Shape[1] != rank)
            throw new InvalidDataException($"{path}: {upKey} is [{string.Join(", ", info.Shape)}]; a fused QKV's lora_up is [3 x inner, {rank}].");
        if (rank % 3 != 0) return false;
        using var scope = NewDisposeScope();
        var up = file.Read(upKey, ScalarType.Float32);
        long rows = info.Shape[0] / 3, cols = rank / 3;
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 3; k++)
                if (j != k && up.narrow(0, j * rows, rows).narrow(1, k * cols, cols).count_nonzero().item<long>() != 0) return false;
        return true;
    }

    /// <summary>
    /// Reads converted layers into one <c>transformer</c> part: the QKV thirds cut out, each pair's PEFT scaling the
    /// metadata's or diffusers' default (the first layer's rank over its own), times its converter factor.
    /// </summary>
    private static Dictionary<string, LoraWeights> Flux2Weights(string path, SafetensorsFile file, List<Flux2Layer> layers)
    {
        var metadata = LoraAdapterMetadata.Read(path, file.Header.Metadata);
        var lora = new LoraWeights("transformer", LoraKeyFormat.Peft);
        try
        {
            foreach (var (module, source, downKey, upKey, third, sparse, _) in layers)
            {
                if (lora._layers.ContainsKey(module))
                    throw new InvalidDataException($"{path}: two tensors adapt {module} once converted as diffusers converts FLUX.2 LoRAs ({lora._sources[module]}, {source}).");
                using var scope = NewDisposeScope();
                var down = file.Read(downKey, ScalarType.Float32);
                var up = file.Read(upKey, ScalarType.Float32);
                if (down.dim() != 2 || up.dim() != 2 || up.shape[1] != down.shape[0] || (third >= 0 && up.shape[0] % 3 != 0))
                    throw new InvalidDataException($"{path}: {source} has down [{string.Join(", ", down.shape)}] and up [{string.Join(", ", up.shape)}]; expected [r, in] and [out, r]{(third >= 0 ? " with out a multiple of 3 (a fused QKV)" : "")}.");
                if (third >= 0)
                {
                    long rows = up.shape[0] / 3, cols = down.shape[0] / 3;
                    up = up.narrow(0, third * rows, rows);
                    if (sparse)
                    {
                        up = up.narrow(1, third * cols, cols);
                        down = down.narrow(0, third * cols, cols);
                    }
                }
                lora._layers[module] = (down.contiguous().MoveToOuterDisposeScope(), up.contiguous().MoveToOuterDisposeScope());
                lora._sources[module] = source;
            }
            // PEFT's lora_alpha without metadata: the first lora_B's rank of the converted dict, which the layers follow.
            long defaultAlpha = lora._layers[layers[0].Module].Up.shape[1];
            foreach (var layer in layers)
            {
                long rank = lora._layers[layer.Module].Down.shape[0];
                double peft = metadata?.Scaling(path, "transformer", layer.Module, rank) ?? (double)defaultAlpha / rank;
                // The kohya converter's alpha / r multiplies the pair before PEFT's own scaling.
                lora._scales[layer.Module] = (float)peft * (float)layer.Factor;
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
