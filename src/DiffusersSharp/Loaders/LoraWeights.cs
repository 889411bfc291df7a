using DiffusersSharp.IO;
using DiffusersSharp.Models.Transformers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Loaders;

/// <summary>The key layout of a LoRA file.</summary>
public enum LoraKeyFormat
{
    /// <summary>
    /// diffusers' <c>save_lora_weights</c> (PEFT): <c>{component}.{module}.lora_A.weight</c> [r, in],
    /// <c>.lora_B.weight</c> [out, r] and optionally <c>.alpha</c>.
    /// </summary>
    Peft,

    /// <summary>
    /// kohya sd-scripts (most LoRAs on civitai): <c>lora_unet_{module}.lora_down.weight</c>, <c>.lora_up.weight</c>,
    /// <c>.alpha</c>, with <c>lora_te_</c> (SD 1.x), <c>lora_te1_</c> / <c>lora_te2_</c> (SDXL) for the text encoders and
    /// module paths written with <c>_</c> for <c>.</c> (diffusers' names or, for SDXL UNets, the SGM / LDM ones). Flux
    /// files name the original BFL modules (<c>lora_unet_double_blocks_0_img_attn_qkv</c>, see
    /// <see cref="FluxOriginalLayout"/>), or diffusers' ones under <c>lora_transformer_</c>; ComfyUI's variant writes
    /// <c>diffusion_model.double_blocks.0.img_attn.qkv.lora_down.weight</c> and, for CLIP-L,
    /// <c>text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.lora_down.weight</c>.
    /// </summary>
    Kohya,

    /// <summary>
    /// Black Forest Labs' original Flux layout, as their control LoRAs (FLUX.1-Canny-dev-lora, FLUX.1-Depth-dev-lora)
    /// ship: <c>double_blocks.0.img_attn.qkv.lora_A.weight</c>, <c>.lora_B.weight</c>, optionally <c>.lora_B.bias</c>,
    /// and QK-norm scales (<c>double_blocks.0.img_attn.norm.query_norm.scale</c>) that replace the transformer's; fal's
    /// Kontext LoRA trainer writes the same names under <c>base_model.model.</c>.
    /// </summary>
    Bfl,

    /// <summary>
    /// XLabs-AI's Flux LoRAs (x-flux): <c>double_blocks.0.processor.qkv_lora1.down.weight</c> / <c>.up.weight</c> (qkv_lora1 /
    /// proj_lora1 the image stream's QKV and output projection, qkv_lora2 / proj_lora2 the text stream's), and
    /// <c>single_blocks.0.processor.qkv_lora</c> / <c>proj_lora</c> (a single block's Q, K, V and linear2), optionally
    /// under <c>diffusion_model.</c>; no alphas.
    /// </summary>
    XLabs,
}

/// <summary>
/// A LoRA for one pipeline component: for each adapted <c>Linear</c> or <c>Conv2d</c>, a down matrix A [r, in]
/// ([r, in, kh, kw] for a conv), an up matrix B [out, r] ([out, r, 1, 1]) and PEFT's scaling <c>alpha / r</c>. Fusing
/// adds <c>scale · (alpha / r) · B A</c> to the module's weight, which is what diffusers computes unfused
/// (<c>W x + scale · (alpha / r) · B (A x)</c>) up to float rounding; <c>scale</c> plays the part of diffusers'
/// <c>joint_attention_kwargs={"scale": s}</c> or <c>fuse_lora(lora_scale=s)</c>. A layer may also carry a bias of B
/// (PEFT's <c>lora_bias</c>, which adds <c>scale · (alpha / r) · b</c> to the module's bias), and a file may carry whole
/// QK-norm weights that replace the model's (Flux control LoRAs; diffusers loads them outside the LoRA, unscaled).
/// </summary>
/// <remarks>
/// The alpha of a layer is its <c>.alpha</c> tensor when the file has one (kohya files do; PEFT files may), else the
/// <c>lora_alpha</c> / <c>alpha_pattern</c> of the adapter metadata diffusers can store in the file, else what diffusers
/// assumes: the rank of the component's first layer (a factor of 1 when all ranks are equal; see
/// <c>DiffusersDefaultAlpha</c>). The format is told from the keys (<see cref="LoraKeyFormat"/>).
/// On a <see cref="FluxTransformer2DModel"/> a down matrix wider than its Linear widens the Linear (zero columns added),
/// as diffusers does for FLUX.1-Canny / Depth LoRAs, whose x_embedder takes the control image's latents too (the config's
/// in_channels follows); a narrower one is zero-padded to the Linear's width (a regular LoRA on such a transformer).
/// </remarks>
public sealed partial class LoraWeights : IDisposable
{
    private static readonly (string Prefix, string Component)[] KohyaPrefixes =
        [("lora_unet_", "unet"), ("lora_te_", "text_encoder"), ("lora_te1_", "text_encoder"), ("lora_te2_", "text_encoder_2"),
         ("lora_transformer_", "transformer")];

    /// <summary>ComfyUI's kohya variant: <c>diffusion_model.</c> + the dotted BFL module path (diffusers reads it as <c>lora_unet_</c>).</summary>
    private const string ComfyPrefix = "diffusion_model.";

    /// <summary>ComfyUI's CLIP-L part: <c>text_encoders.clip_l.transformer.</c> + the module path (diffusers: <c>lora_te_</c>).</summary>
    private const string ComfyClipPrefix = "text_encoders.clip_l.transformer.";

    /// <summary>fal's Kontext LoRAs: BFL's names under PEFT's model prefix.</summary>
    private const string FalPrefix = "base_model.model.";

    /// <summary>First segments of BFL's Flux module paths.</summary>
    private static readonly string[] BflRoots =
        ["double_blocks.", "single_blocks.", "img_in.", "txt_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer."];

    /// <summary>diffusers' <c>_control_lora_supported_norm_keys</c>: the modules whose weights a Flux control LoRA replaces.</summary>
    private static readonly string[] ReplacedNorms = ["norm_q", "norm_k", "norm_added_q", "norm_added_k"];

    private readonly Dictionary<string, (Tensor Down, Tensor Up)> _layers;
    private readonly Dictionary<string, Tensor> _upBiases;
    private readonly Dictionary<string, Tensor> _replacements;
    private readonly Dictionary<string, float> _scales;
    private readonly Dictionary<string, string> _sources;
    // What the last fuse changed besides the deltas (replaced weights, widened Linears), to undo in UnfuseFrom.
    private readonly List<(Tensor Parameter, Tensor Original)> _replaced = [];
    private readonly List<(Linear Module, long Width)> _widened = [];

    private LoraWeights(string component, LoraKeyFormat format)
    {
        Component = component;
        Format = format;
        _layers = new(StringComparer.Ordinal);
        _upBiases = new(StringComparer.Ordinal);
        _replacements = new(StringComparer.Ordinal);
        _scales = new(StringComparer.Ordinal);
        _sources = new(StringComparer.Ordinal);
    }

    /// <summary>The pipeline component the LoRA adapts (the key prefix, e.g. <c>transformer</c>; <c>unet</c> for <c>lora_unet_</c>).</summary>
    public string Component { get; }

    /// <summary>The key layout the file used.</summary>
    public LoraKeyFormat Format { get; }

    /// <summary>
    /// Adapted layers and their A (down) and B (up) matrices in float32. For <see cref="LoraKeyFormat.Peft"/> the names
    /// are module paths as in the component's state dict (without <c>.weight</c>); for <see cref="LoraKeyFormat.Kohya"/>
    /// and <see cref="LoraKeyFormat.Bfl"/> they are the file's layer names (without the <c>lora_unet_</c> / <c>lora_te*_</c>
    /// prefix; <c>_</c> for <c>.</c> in BFL names), resolved against the model when fusing.
    /// </summary>
    public IReadOnlyDictionary<string, (Tensor Down, Tensor Up)> Layers => _layers;

    /// <summary>The biases of B (<c>lora_B.bias</c>, PEFT's <c>lora_bias</c>) of the layers that have one, in float32.</summary>
    public IReadOnlyDictionary<string, Tensor> UpBiases => _upBiases;

    /// <summary>
    /// Whole weights that replace the model's when fused (Flux control LoRAs' QK-norm scales), in float32: parameter paths
    /// for <see cref="LoraKeyFormat.Peft"/>, BFL names with <c>_</c> for <c>.</c> for <see cref="LoraKeyFormat.Bfl"/>.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> Replacements => _replacements;

    /// <summary>PEFT's scaling of each layer, <c>alpha / r</c> in float32 (with diffusers' default alpha when the file gives none).</summary>
    public IReadOnlyDictionary<string, float> Scales => _scales;

    /// <summary>Reads a LoRA file for one component; every tensor in it must be a LoRA tensor of that component.</summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">Keys of another component or format, or an incomplete or mis-shaped pair.</exception>
    public static LoraWeights Load(string path, string component = "transformer")
    {
        var all = LoadAll(path);
        var others = all.Keys.Where(k => k != component).ToList();
        if (others.Count == 0 && all.TryGetValue(component, out var lora)) return lora;
        foreach (var l in all.Values) l.Dispose();
        throw new InvalidDataException(others.Count > 0
            ? $"{path} adapts {string.Join(", ", others)}, not only {component}: read it with LoadAll or StableDiffusion3Components.FuseLora."
            : $"{path} has no {component}.*.lora_A.weight tensors.");
    }

    /// <summary>
    /// Reads a LoRA file for every component it adapts (<c>transformer</c>, <c>unet</c>, <c>text_encoder</c>,
    /// <c>text_encoder_2</c>, ...), in any <see cref="LoraKeyFormat"/> (told from the keys). Every tensor must be the
    /// down, up, up-bias or alpha tensor of a complete pair, or a replaced QK-norm weight, or the load fails.
    /// </summary>
    /// <inheritdoc cref="Load" path="/exception"/>
    public static IReadOnlyDictionary<string, LoraWeights> LoadAll(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"LoRA file not found: {path}", path);
        using var file = SafetensorsFile.Open(path);
        var format = DetectFormat(file.Tensors.Keys);
        var layers = new Dictionary<(string Component, string Layer), LayerKeys>();
        var replacements = new Dictionary<(string Component, string Name), string>();
        var unknown = new List<string>();
        var repeated = new List<string>();
        foreach (var key in file.Tensors.Keys)
        {
            if (ParseKey(key, format) is not { } parsed)
            {
                unknown.Add(key);
                continue;
            }
            var id = (parsed.Component, parsed.Layer);
            if (parsed.Part == Part.Replacement)
            {
                if (!replacements.TryAdd(id, key)) repeated.Add(key);
                continue;
            }
            if (!layers.TryGetValue(id, out var entry)) layers[id] = entry = new LayerKeys(parsed.Stem);
            if (!entry.Set(parsed.Part, key)) repeated.Add(key);
        }
        if (unknown.Count > 0)
            throw new InvalidDataException(format switch
            {
                LoraKeyFormat.Kohya => $"{path}: {unknown.Count} key(s) are not kohya LoRA tensors (lora_unet_ / lora_te_ / lora_te1_ / lora_te2_ / lora_transformer_ or diffusion_model. + layer + .lora_down.weight, .lora_up.weight or .alpha; LoHa, LoKr, DoRA and other LyCORIS types are not supported), e.g. {string.Join(", ", unknown.Take(3))}.",
                LoraKeyFormat.Bfl => $"{path}: {unknown.Count} key(s) are not LoRA tensors of BFL's Flux layout (module + .lora_A.weight, .lora_B.weight or .lora_B.bias, or a *_norm.scale), e.g. {string.Join(", ", unknown.Take(3))}.",
                LoraKeyFormat.XLabs => $"{path}: {unknown.Count} key(s) are not XLabs Flux LoRA tensors ((diffusion_model.)double_blocks.N.processor.qkv_lora1 / qkv_lora2 / proj_lora1 / proj_lora2 or single_blocks.N.processor.qkv_lora / proj_lora + .down.weight / .up.weight), e.g. {string.Join(", ", unknown.Take(3))}.",
                _ => $"{path}: {unknown.Count} key(s) are not component.module.lora_A.weight / lora_B.weight / lora_B.bias / alpha (nor kohya lora_unet_ / lora_te_ keys, nor a Flux control LoRA's norm_q / norm_k / norm_added_q / norm_added_k weights), e.g. {string.Join(", ", unknown.Take(3))}.",
            });
        if (repeated.Count > 0)
            throw new InvalidDataException($"{path}: two tensors for the same layer of one component (lora_te_ and lora_te1_ both?): {string.Join(", ", repeated.Take(3))}.");
        var incomplete = layers.Values.Where(l => l.Down is null || l.Up is null).Select(l => l.Stem).ToList();
        if (incomplete.Count > 0)
            throw new InvalidDataException($"{path}: a down (lora_A / lora_down) without its up (lora_B / lora_up) or the reverse, or an alpha or bias alone, for {string.Join(", ", incomplete.Take(3))}.");
        if (layers.Count == 0) throw new InvalidDataException($"{path} has no *.lora_A.weight or *.lora_down.weight tensors.");
        var metadata = format == LoraKeyFormat.Peft ? LoraAdapterMetadata.Read(path, file.Header.Metadata) : null;

        var result = new Dictionary<string, LoraWeights>(StringComparer.Ordinal);
        try
        {
            var components = layers.Keys.Select(k => k.Component).Concat(replacements.Keys.Select(k => k.Component)).Distinct();
            foreach (var component in components.OrderBy(c => c, StringComparer.Ordinal))
            {
                var lora = result[component] = new LoraWeights(component, format);
                var own = layers.Where(p => p.Key.Component == component).Select(p => (p.Key.Layer, Keys: p.Value)).ToList();
                long? defaultAlpha = format == LoraKeyFormat.Peft ? DiffusersDefaultAlpha(component, own.Select(l => (l.Layer, file.Tensors[l.Keys.Up!]))) : null;
                foreach (var (name, keys) in own.OrderBy(l => l.Layer, StringComparer.Ordinal))
                    lora.ReadLayer(path, file, name, keys, metadata, defaultAlpha);
                foreach (var ((_, name), key) in replacements.Where(p => p.Key.Component == component).OrderBy(p => p.Key.Name, StringComparer.Ordinal))
                {
                    lora._replacements[name] = file.Read(key, ScalarType.Float32);
                    lora._sources[name] = key;
                }
            }
        }
        catch
        {
            foreach (var lora in result.Values) lora.Dispose();
            throw;
        }
        return result;
    }

    /// <summary>
    /// The input width of the Flux x_embedder a LoRA file adapts (its down matrix's columns, under any of the key layouts
    /// diffusers reads), from the file's header alone; null when it does not adapt x_embedder. A FLUX.1-Canny / Depth
    /// LoRA's is twice a FLUX.1-dev transformer's in_channels (the control image's latents beside the noise).
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    public static long? FluxInputWidth(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"LoRA file not found: {path}", path);
        using var file = SafetensorsFile.Open(path);
        foreach (var key in (string[])["transformer.x_embedder.lora_A.weight", "img_in.lora_A.weight", "lora_unet_img_in.lora_down.weight",
                     $"{ComfyPrefix}img_in.lora_down.weight", "lora_transformer_x_embedder.lora_down.weight"])
            if (file.Tensors.TryGetValue(key, out var info) && info.Shape.Length == 2) return info.Shape[1];
        return null;
    }

    private static LoraKeyFormat DetectFormat(IEnumerable<string> keys)
    {
        if (keys.Any(k => KohyaPrefixes.Any(p => k.StartsWith(p.Prefix, StringComparison.Ordinal))
                || ((k.StartsWith(ComfyPrefix, StringComparison.Ordinal) || k.StartsWith(ComfyClipPrefix, StringComparison.Ordinal)) && KohyaPart(k) is not null)))
            return LoraKeyFormat.Kohya;
        if (keys.Any(k => k.Contains(".processor.qkv_lora", StringComparison.Ordinal) || k.Contains(".processor.proj_lora", StringComparison.Ordinal)))
            return LoraKeyFormat.XLabs;
        if (keys.Any(k => BflRoots.Any(r => k.StartsWith(r, StringComparison.Ordinal) || k.StartsWith(FalPrefix + r, StringComparison.Ordinal))))
            return LoraKeyFormat.Bfl;
        return LoraKeyFormat.Peft;
    }

    private enum Part { Down, Up, Alpha, UpBias, Replacement }

    private sealed class LayerKeys(string stem)
    {
        public string Stem { get; } = stem;
        public string? Down { get; private set; }
        public string? Up { get; private set; }
        public string? Alpha { get; private set; }
        public string? UpBias { get; private set; }

        public bool Set(Part part, string key)
        {
            switch (part)
            {
                case Part.Down when Down is null: Down = key; return true;
                case Part.Up when Up is null: Up = key; return true;
                case Part.Alpha when Alpha is null: Alpha = key; return true;
                case Part.UpBias when UpBias is null: UpBias = key; return true;
                default: return false;
            }
        }
    }

    /// <summary>The kohya part a key ends with, and the key without it.</summary>
    private static (string Stem, Part Part)? KohyaPart(string key)
    {
        foreach (var (suffix, part) in new[] { (".lora_down.weight", Part.Down), (".lora_up.weight", Part.Up), (".alpha", Part.Alpha) })
            if (key.EndsWith(suffix, StringComparison.Ordinal) && key.Length > suffix.Length) return (key[..^suffix.Length], part);
        return null;
    }

    private static (string Component, string Layer, string Stem, Part Part)? ParseKey(string key, LoraKeyFormat format)
    {
        if (format == LoraKeyFormat.Kohya)
        {
            if (KohyaPart(key) is not var (stem, part) || stem.Contains(".lora_", StringComparison.Ordinal)) return null;
            if (stem.StartsWith(ComfyPrefix, StringComparison.Ordinal))
            {
                // diffusers turns diffusion_model.X.Y into lora_unet_X_Y.
                string layer = stem[ComfyPrefix.Length..].Replace('.', '_');
                return layer.Length > 0 ? ("unet", layer, stem, part) : null;
            }
            if (stem.StartsWith(ComfyClipPrefix, StringComparison.Ordinal))
            {
                string layer = stem[ComfyClipPrefix.Length..].Replace('.', '_');
                return layer.Length > 0 ? ("text_encoder", layer, stem, part) : null;
            }
            if (stem.Contains('.', StringComparison.Ordinal)) return null;
            var prefix = KohyaPrefixes.FirstOrDefault(p => stem.StartsWith(p.Prefix, StringComparison.Ordinal));
            if (prefix.Prefix is null || stem.Length == prefix.Prefix.Length) return null;
            return (prefix.Component, stem[prefix.Prefix.Length..], stem, part);
        }
        if (format == LoraKeyFormat.XLabs) return XLabsKey(key);
        if (format == LoraKeyFormat.Bfl)
        {
            string name = key.StartsWith(FalPrefix, StringComparison.Ordinal) ? key[FalPrefix.Length..] : key;
            // No alphas: BFL's files have none, and diffusers' converter refuses any tensor it does not map.
            if (name.EndsWith(".query_norm.scale", StringComparison.Ordinal) || name.EndsWith(".key_norm.scale", StringComparison.Ordinal))
                return ("transformer", name.Replace('.', '_'), key, Part.Replacement);
            foreach (var (suffix, p) in new[] { (".lora_A.weight", Part.Down), (".lora_B.weight", Part.Up), (".lora_B.bias", Part.UpBias) })
                if (name.EndsWith(suffix, StringComparison.Ordinal) && name.Length > suffix.Length)
                    return ("transformer", name[..^suffix.Length].Replace('.', '_'), key[..^suffix.Length], p);
            return null;
        }
        foreach (var (suffix, p) in new[] { (".lora_A.weight", Part.Down), (".lora_B.weight", Part.Up), (".lora_B.bias", Part.UpBias), (".alpha", Part.Alpha) })
        {
            if (!key.EndsWith(suffix, StringComparison.Ordinal)) continue;
            string stem = key[..^suffix.Length];
            int dot = stem.IndexOf('.', StringComparison.Ordinal);
            return dot > 0 && dot < stem.Length - 1 ? (stem[..dot], stem[(dot + 1)..], stem, p) : null;
        }
        // A Flux control LoRA's QK-norm weight in diffusers' names: transformer.{...}.norm_q.weight.
        int first = key.IndexOf('.', StringComparison.Ordinal);
        if (first > 0 && key.EndsWith(".weight", StringComparison.Ordinal) && key.Length > first + ".weight".Length + 1)
        {
            string parameter = key[(first + 1)..], module = parameter[..^".weight".Length];
            if (ReplacedNorms.Contains(module[(module.LastIndexOf('.') + 1)..])) return (key[..first], parameter, key, Part.Replacement);
        }
        return null;
    }

    private static readonly System.Text.RegularExpressions.Regex XLabsName = new(
        @"^(?:diffusion_model\.)?(double|single)_blocks\.(\d+)\.processor\.(qkv_lora1|qkv_lora2|proj_lora1|proj_lora2|qkv_lora|proj_lora)\.(down|up)\.weight$");

    /// <summary>An XLabs key as the BFL layer its LoRA adapts (see <see cref="FluxOriginalLayout"/>), as diffusers converts it.</summary>
    private static (string Component, string Layer, string Stem, Part Part)? XLabsKey(string key)
    {
        var m = XLabsName.Match(key);
        if (!m.Success) return null;
        string? module = (m.Groups[1].Value, m.Groups[3].Value) switch
        {
            ("double", "qkv_lora1") => "img_attn_qkv",
            ("double", "qkv_lora2") => "txt_attn_qkv",
            ("double", "proj_lora1") => "img_attn_proj",
            ("double", "proj_lora2") => "txt_attn_proj",
            ("single", "qkv_lora") => "linear1_qkv",
            ("single", "proj_lora") => "linear2",
            _ => null,
        };
        if (module is null) return null;
        string stem = key[..key.LastIndexOf('.', key.Length - ".weight".Length - 1)];
        return ("transformer", $"{m.Groups[1].Value}_blocks_{m.Groups[2].Value}_{module}", stem, m.Groups[4].Value == "down" ? Part.Down : Part.Up);
    }

    /// <summary>CLIP's adapted modules in the order its encoder layer defines them (transformers' CLIPEncoderLayer).</summary>
    private static readonly string[] ClipLayerModules = ["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2"];

    private static readonly System.Text.RegularExpressions.Regex ClipLayerModule = new(@"(?:^|\.)layers\.(\d+)\.(self_attn\.(?:k|v|q|out)_proj|mlp\.fc[12])$");

    /// <summary>
    /// The lora_alpha diffusers gives a PEFT-format part without alphas (no <c>.alpha</c> tensors, no adapter metadata):
    /// <c>get_peft_kwargs</c> takes the rank of the first entry of its rank dict for every module, so a module whose rank
    /// differs is scaled by that rank / its own. The rank dict of a UNet or transformer lists the lora_B tensors in the
    /// order safetensors' <c>load_file</c> reads them (by data offset); a text encoder's lists its attention and MLP
    /// projections in module order (<c>_load_lora_into_text_encoder</c> walks <c>named_modules</c>). Null where that dict
    /// would be empty.
    /// </summary>
    private static long? DiffusersDefaultAlpha(string component, IEnumerable<(string Layer, SafetensorsTensorInfo Up)> ups)
    {
        var first = component.StartsWith("text_encoder", StringComparison.Ordinal)
            ? ups.Select(u => (u.Up, Match: ClipLayerModule.Match(u.Layer))).Where(u => u.Match.Success)
                .OrderBy(u => int.Parse(u.Match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture))
                .ThenBy(u => Array.IndexOf(ClipLayerModules, u.Match.Groups[2].Value)).Select(u => u.Up).FirstOrDefault()
            : ups.Select(u => u.Up).Where(u => u.Shape.Length > 1).OrderBy(u => u.Begin).FirstOrDefault();
        return first is { Shape.Length: > 1 } ? first.Shape[1] : null;
    }

    private void ReadLayer(string path, SafetensorsFile file, string name, LayerKeys keys, LoraAdapterMetadata? metadata, long? defaultAlpha)
    {
        float? alpha = null;
        if (keys.Alpha is not null)
        {
            var info = file.Tensors[keys.Alpha];
            if (info.ElementCount != 1)
                throw new InvalidDataException($"{path}: {keys.Alpha} is [{string.Join(", ", info.Shape)}]; an alpha is a single number.");
            using var a = file.Read(keys.Alpha, ScalarType.Float32);
            alpha = a.item<float>();
        }
        var down = file.Read(keys.Down!, ScalarType.Float32);
        Tensor up;
        try
        {
            up = file.Read(keys.Up!, ScalarType.Float32);
        }
        catch
        {
            down.Dispose();
            throw;
        }
        // Owned by this LoRA from here on, so that a failed load disposes them with the rest.
        _layers[name] = (down, up);
        _sources[name] = keys.Stem;
        bool linear = down.dim() == 2 && up.dim() == 2, conv = down.dim() == 4 && up.dim() == 4 && up.shape[2] == 1 && up.shape[3] == 1;
        if (!(linear || conv) || up.shape[1] != down.shape[0])
            throw new InvalidDataException($"{path}: {keys.Stem} has down [{string.Join(", ", down.shape)}] and up [{string.Join(", ", up.shape)}]; expected [r, in] and [out, r] (a conv: [r, in, kh, kw] and [out, r, 1, 1]).");
        if (keys.UpBias is not null)
        {
            var bias = _upBiases[name] = file.Read(keys.UpBias, ScalarType.Float32);
            if (!linear || bias.dim() != 1 || bias.shape[0] != up.shape[0])
                throw new InvalidDataException($"{path}: {keys.UpBias} is [{string.Join(", ", bias.shape)}]; a Linear layer's lora_B bias is [{up.shape[0]}] (out).");
        }
        long rank = down.shape[0];
        // PEFT's scaling lora_alpha / r, in float32 like the weights it multiplies.
        _scales[name] = alpha is { } x ? x / rank : (float)(metadata?.Scaling(path, Component, name, rank) ?? (double)(defaultAlpha ?? rank) / rank);
    }

    /// <summary>
    /// diffusers' <c>load_lora_weights(path)</c> + <c>fuse_lora(lora_scale=scale)</c> for a whole pipeline: reads every
    /// component part of the file, checks each against its model in <paramref name="models"/> (component name -> model,
    /// null for a component the pipeline has not loaded) before any weight changes, then fuses them all. Returns the number
    /// of adapted layers. <paramref name="kohya"/> says whether kohya files are accepted (diffusers' SD / SDXL / Flux
    /// loaders convert them; its SD3 loader does not). A kohya <c>unet</c> part adapts a Flux <c>transformer</c>.
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file adapts components these models do not have, or is not a LoRA.</exception>
    /// <exception cref="ArgumentException">A part does not fit its model (missing modules or other sizes).</exception>
    /// <remarks>With <paramref name="fused"/>, the file's matrices are kept there so that the fuse can be undone.</remarks>
    public static int FuseAll(string path, IReadOnlyDictionary<string, nn.Module?> models, double scale = 1.0, bool kohya = true, FusedLoras? fused = null) =>
        FuseParts(path, LoadAll, models, scale, kohya, fused);

    /// <summary><see cref="FuseAll"/> with the file read by <paramref name="read"/> (a pipeline's own key conversion).</summary>
    private static int FuseParts(string path, Func<string, IReadOnlyDictionary<string, LoraWeights>> read, IReadOnlyDictionary<string, nn.Module?> models,
        double scale, bool kohya, FusedLoras? fused)
    {
        ArgumentNullException.ThrowIfNull(models);
        if (!double.IsFinite(scale)) throw new ArgumentException($"LoRA scale must be finite, got {scale}.", nameof(scale));
        var parts = read(path);
        try
        {
            var plans = new List<(LoraWeights Lora, nn.Module Model, Plan Plan)>();
            var modelOf = new Dictionary<string, nn.Module?>(StringComparer.Ordinal);
            foreach (var (component, lora) in parts)
            {
                if (lora.Format == LoraKeyFormat.Kohya && !kohya)
                    throw new InvalidDataException($"{path} is a kohya LoRA (lora_unet_ / lora_te_ keys), which this pipeline does not read; convert it to diffusers' format.");
                if (!models.TryGetValue(component, out var model) && !IsFluxKohyaUnet(lora, models, out model))
                    throw new InvalidDataException($"{path} adapts '{component}'; this pipeline's LoRA components are {string.Join(", ", models.Keys)}.");
                if (model is null) throw new InvalidDataException($"{path} adapts {component}, which this pipeline has not loaded.");
                modelOf[component] = model;
                plans.Add((lora, model, lora.Targets(model)));
            }
            foreach (var (lora, model, plan) in plans) lora.Apply(plan, scale);
            int layers = parts.Values.Sum(l => l.Layers.Count);
            if (fused is not null)
            {
                fused.Add(parts, modelOf, scale);
                parts = null; // the record owns them now
            }
            return layers;
        }
        finally
        {
            if (parts is not null)
                foreach (var lora in parts.Values) lora.Dispose();
        }
    }

    /// <summary>kohya's Flux files name the transformer <c>lora_unet_</c> (sd-scripts' prefix for the denoiser).</summary>
    private static bool IsFluxKohyaUnet(LoraWeights lora, IReadOnlyDictionary<string, nn.Module?> models, out nn.Module? model)
    {
        model = null;
        return lora is { Component: "unet", Format: LoraKeyFormat.Kohya } && models.TryGetValue("transformer", out model) && model is FluxTransformer2DModel;
    }

    /// <summary>
    /// Throws unless every layer of this LoRA names a Linear or Conv2d of <paramref name="model"/> (for kohya and BFL
    /// names, once resolved) of the pair's size, no two layers name the same module, and every replaced weight is a
    /// parameter of the model of the same shape.
    /// </summary>
    /// <exception cref="ArgumentException">A module is missing, of another kind, or of another size than its pair.</exception>
    public void CheckFits(nn.Module model) => Targets(model);

    /// <summary>
    /// Adds <c>scale · (alpha / r) · B A</c> to each adapted module's weight of <paramref name="model"/> (in its dtype and
    /// on its device), and <c>scale · (alpha / r) · b</c> to its bias where B has one; replaces the weights of
    /// <see cref="Replacements"/> (unscaled) and widens Linears of a Flux transformer that the LoRA's down matrices are
    /// wider than. Every module is checked before any weight changes; <see cref="UnfuseFrom"/> takes it back out.
    /// </summary>
    /// <inheritdoc cref="CheckFits" path="/exception"/>
    public void FuseInto(nn.Module model, double scale = 1.0)
    {
        if (!double.IsFinite(scale)) throw new ArgumentException($"LoRA scale must be finite, got {scale}.", nameof(scale));
        Apply(Targets(model), scale);
    }

    /// <summary>
    /// Takes a <see cref="FuseInto"/> at <paramref name="scale"/> back out (diffusers' <c>unfuse_lora</c>, and for what
    /// diffusers loads beside the LoRA, <c>unload_lora_weights(reset_to_overwritten_params=True)</c>): subtracts the
    /// deltas (up to rounding in the model's dtype), puts replaced weights back and narrows widened Linears again.
    /// </summary>
    /// <inheritdoc cref="CheckFits" path="/exception"/>
    public void UnfuseFrom(nn.Module model, double scale = 1.0)
    {
        if (!double.IsFinite(scale)) throw new ArgumentException($"LoRA scale must be finite, got {scale}.", nameof(scale));
        var plan = Targets(model);
        Fuse(plan.Targets, -scale);
        using var noGrad = no_grad();
        // Newest first, so that a LoRA fused twice comes back to the weights before the first fuse.
        foreach (var (parameter, original) in Enumerable.Reverse(_replaced))
        {
            parameter.copy_(original);
            original.Dispose();
        }
        _replaced.Clear();
        foreach (var (linear, width) in Enumerable.Reverse(_widened)) SetWidth(linear, width);
        _widened.Clear();
    }

    /// <summary>One fused module: its path, the file's layer it comes from, and the matrices it adds (B's rows as the layout splits them).</summary>
    internal sealed record Target(string Name, string Source, nn.Module Module, Tensor Down, Tensor Up, Tensor? UpBias, float Scaling);

    /// <summary>What fusing into one model does: the deltas, the replaced parameters (by path) and the Linears widened to a width.</summary>
    internal sealed record Plan(List<Target> Targets, List<(string Name, string Source, Tensor Parameter, Tensor Value)> Replacements, Dictionary<Linear, long> Widen);

    private void Apply(Plan plan, double scale)
    {
        using (var noGrad = no_grad())
        {
            foreach (var (linear, width) in plan.Widen)
            {
                _widened.Add((linear, linear.weight!.shape[1]));
                SetWidth(linear, width);
            }
            foreach (var (_, _, parameter, value) in plan.Replacements)
            {
                _replaced.Add((parameter, parameter.detach().clone()));
                parameter.copy_(value);
            }
        }
        Fuse(plan.Targets, scale);
    }

    /// <summary>Gives a Linear <paramref name="width"/> input features: zero columns added, or the extra ones dropped.</summary>
    private static void SetWidth(Linear linear, long width)
    {
        var weight = linear.weight!;
        long kept = Math.Min(width, weight.shape[1]);
        var resized = zeros(weight.shape[0], width, dtype: weight.dtype, device: weight.device);
        resized.narrow(1, 0, kept).copy_(weight.narrow(1, 0, kept));
        linear.weight = new Parameter(resized, requires_grad: weight.requires_grad);
    }

    private static void Fuse(List<Target> targets, double scale)
    {
        using var noGrad = no_grad();
        foreach (var (_, _, module, down, up, upBias, scaling) in targets)
        {
            using var scope = NewDisposeScope();
            var (weight, bias) = module switch { Linear l => (l.weight!, l.bias), Conv2d c => (c.weight!, c.bias), _ => throw new InvalidOperationException() };
            // A down matrix narrower than the weight (a regular LoRA on a widened Flux x_embedder) acts on its first columns.
            var a = down.to(weight.device);
            if (a.shape[1] < weight.shape[1]) a = nn.functional.pad(a, [0, weight.shape[1] - a.shape[1]]);
            // B A; for a conv the 1x1 up times the [r, in, kh, kw] down, which is PEFT's conv delta written as a matmul.
            var product = up.to(weight.device).flatten(1).matmul(a.flatten(1)).view(weight.shape);
            // PEFT multiplies by lora_alpha / r times the fuse scale; the update and the sum in float32, then one rounding
            // into the model's dtype (bf16 / fp16 round once, not twice).
            var delta = product.mul_(scale * scaling);
            weight.copy_(weight.to(ScalarType.Float32).add_(delta).to(weight.dtype));
            if (upBias is not null) bias!.copy_(bias!.to(ScalarType.Float32).add_(upBias.to(bias.device) * (scale * scaling)).to(bias.dtype));
        }
    }

    /// <summary>Resolves and checks every layer and replaced weight against <paramref name="model"/>; changes nothing.</summary>
    internal Plan Targets(nn.Module model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var flux = model as FluxTransformer2DModel;
        if (Format is LoraKeyFormat.Bfl or LoraKeyFormat.XLabs && flux is null)
            throw new ArgumentException($"This LoRA is in {(Format == LoraKeyFormat.Bfl ? "BFL's" : "XLabs'")} Flux layout (double_blocks / single_blocks), which adapts a Flux transformer, not a {model.GetType().Name}.");
        if (_replacements.Count > 0 && flux is null)
            throw new ArgumentException($"The {Component} LoRA carries whole norm weights ({string.Join(", ", _replacements.Keys.Take(2))}), as Flux control LoRAs do; this model is a {model.GetType().Name}.");
        var modules = model.named_modules().ToDictionary(m => m.name, m => m.module, StringComparer.Ordinal);
        // BFL names, in BFL's own files and in kohya sd-scripts' Flux files (lora_unet_double_blocks_...).
        var original = flux is not null && (Format is LoraKeyFormat.Bfl or LoraKeyFormat.XLabs || (Format == LoraKeyFormat.Kohya && Component == "unet"))
            ? FluxOriginalLayout.Layers(flux.Config) : null;
        var kohyaNames = Format == LoraKeyFormat.Kohya && original is null ? KohyaModuleNames.Table(model) : null;
        var claimed = new Dictionary<string, string>(StringComparer.Ordinal);
        var plan = new Plan([], [], []);
        foreach (var (layer, (down, up)) in _layers)
        {
            string source = _sources[layer];
            var resolved = Resolve(layer, source, original, kohyaNames, flux);
            // A fused layer (QKV, linear1) is split by rows: together they must be all of B's.
            long split = resolved.Where(t => t.Rows is not null).SelectMany(t => t.Rows!).Sum(r => r.Count);
            if (split > 0 && split != up.shape[0])
                throw new ArgumentException($"{Component} LoRA: '{source}' makes {up.shape[0]} outputs; this model's {string.Join(" + ", resolved.Select(t => t.Module))} take {split}.");
            var upBias = _upBiases.GetValueOrDefault(layer);
            foreach (var (name, rows) in resolved)
            {
                if (claimed.TryGetValue(name, out var other))
                    throw new ArgumentException($"The {Component} LoRA adapts '{name}' twice: '{other}' and '{source}'.");
                claimed[name] = source;
                var module = modules.GetValueOrDefault(name);
                var weight = module switch { Linear l => l.weight!, Conv2d c => c.weight!, _ => null };
                if (weight is null)
                    throw new ArgumentException($"The {Component} LoRA adapts '{source}', which is not a Linear or Conv2d of this model{(name == source ? "" : $" ('{name}')")}.");
                var (targetUp, targetBias) = (up, upBias);
                if (rows is not null)
                {
                    targetUp = Rows(up, rows);
                    targetBias = upBias is null ? null : Rows(upBias, rows);
                }
                long outputs = targetUp.shape[0], inputs = down.shape[1], width = weight.shape[1];
                bool fits = weight.dim() == down.dim() && weight.shape[0] == outputs && weight.shape.Skip(2).SequenceEqual(down.shape.Skip(2));
                if (fits && inputs != width)
                {
                    // diffusers' Flux loader widens a Linear for a wider LoRA (control LoRAs' x_embedder) and zero-pads a narrower one.
                    fits = flux is not null && module is Linear;
                    if (fits && inputs > width)
                    {
                        var linear = (Linear)module!;
                        if (plan.Widen.TryGetValue(linear, out var w) && w != inputs) fits = false;
                        else plan.Widen[linear] = inputs;
                    }
                }
                if (!fits)
                    throw new ArgumentException($"{Component} LoRA: '{source}' is [{string.Join(", ", weight.shape)}] ('{name}') but its LoRA makes [{outputs}, {string.Join(", ", down.shape.Skip(1))}].");
                if (targetBias is not null && (module as Linear)?.bias is null)
                    throw new ArgumentException($"{Component} LoRA: '{source}' has a lora_B bias, but '{name}' has no bias to add it to.");
                plan.Targets.Add(new Target(name, source, module!, down, targetUp, targetBias, _scales[layer]));
            }
        }
        if (_replacements.Count > 0) AddReplacements(plan, model, flux!);
        return plan;
    }

    /// <summary>The diffusers modules a layer of the file names (several for a fused layer of the original Flux layout).</summary>
    private LayoutTarget[] Resolve(string layer, string source, Dictionary<string, LayoutTarget[]>? original,
        Dictionary<string, string?>? kohyaNames, FluxTransformer2DModel? flux)
    {
        if (original is not null)
            return original.TryGetValue(layer, out var targets) ? targets
                : throw new ArgumentException($"The {Component} LoRA adapts '{source}', which names no layer of this Flux transformer in BFL's layout ({flux!.Config.NumLayers} double_blocks, {flux.Config.NumSingleLayers} single_blocks).");
        if (kohyaNames is null) return [new(layer, null)];
        if (!kohyaNames.TryGetValue(layer, out var name))
            throw new ArgumentException($"The {Component} LoRA adapts '{source}', which names no Linear or Conv2d of this model.");
        return [new(name ?? throw new ArgumentException($"The {Component} LoRA adapts '{source}', which could be more than one module of this model."), null)];
    }

    /// <summary>Checks the whole weights the file replaces (a Flux control LoRA's QK norms) and adds them to the plan.</summary>
    private void AddReplacements(Plan plan, nn.Module model, FluxTransformer2DModel flux)
    {
        var norms = Format == LoraKeyFormat.Bfl ? FluxOriginalLayout.NormScales(flux.Config) : null;
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
        foreach (var (name, value) in _replacements)
        {
            string parameterName = name;
            if (norms is not null && !norms.TryGetValue(name, out parameterName!))
                throw new ArgumentException($"The {Component} LoRA replaces '{_sources[name]}', which names no QK-norm of this Flux transformer.");
            if (!parameters.TryGetValue(parameterName, out var parameter))
                throw new ArgumentException($"The {Component} LoRA replaces '{parameterName}', which is not a parameter of this model.");
            if (!parameter.shape.SequenceEqual(value.shape))
                throw new ArgumentException($"{Component} LoRA: '{parameterName}' is [{string.Join(", ", parameter.shape)}], the file's replacement [{string.Join(", ", value.shape)}].");
            plan.Replacements.Add((parameterName, _sources[name], parameter, value));
        }
    }

    /// <summary>The rows of <paramref name="t"/> that <paramref name="rows"/> name, in order.</summary>
    private static Tensor Rows(Tensor t, RowRange[] rows) =>
        rows.Length == 1 ? t.narrow(0, rows[0].Start, rows[0].Count) : cat(rows.Select(r => t.narrow(0, r.Start, r.Count)).ToArray(), 0);

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var (down, up) in _layers.Values)
        {
            down.Dispose();
            up.Dispose();
        }
        foreach (var t in _upBiases.Values.Concat(_replacements.Values).Concat(_replaced.Select(r => r.Original))) t.Dispose();
        _layers.Clear();
        _upBiases.Clear();
        _replacements.Clear();
        _replaced.Clear();
        _widened.Clear();
        _scales.Clear();
        _sources.Clear();
    }
}
