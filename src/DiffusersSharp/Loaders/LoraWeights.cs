using DiffusersSharp.IO;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

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
    /// module paths written with <c>_</c> for <c>.</c> (diffusers' names or, for SDXL UNets, the SGM / LDM ones).
    /// </summary>
    Kohya,
}

/// <summary>
/// A LoRA for one pipeline component: for each adapted <c>Linear</c> or <c>Conv2d</c>, a down matrix A [r, in]
/// ([r, in, kh, kw] for a conv), an up matrix B [out, r] ([out, r, 1, 1]) and PEFT's scaling <c>alpha / r</c>. Fusing
/// adds <c>scale · (alpha / r) · B A</c> to the module's weight, which is what diffusers computes unfused
/// (<c>W x + scale · (alpha / r) · B (A x)</c>) up to float rounding; <c>scale</c> plays the part of diffusers'
/// <c>joint_attention_kwargs={"scale": s}</c> or <c>fuse_lora(lora_scale=s)</c>.
/// </summary>
/// <remarks>
/// The alpha of a layer is its <c>.alpha</c> tensor when the file has one (kohya files do; PEFT files may), else the
/// <c>lora_alpha</c> / <c>alpha_pattern</c> of the adapter metadata diffusers can store in the file, else <c>r</c>
/// (a factor of 1, as diffusers and PEFT assume). The format is told from the keys (<see cref="LoraKeyFormat"/>).
/// </remarks>
public sealed class LoraWeights : IDisposable
{
    private static readonly (string Prefix, string Component)[] KohyaPrefixes =
        [("lora_unet_", "unet"), ("lora_te_", "text_encoder"), ("lora_te1_", "text_encoder"), ("lora_te2_", "text_encoder_2")];

    private readonly Dictionary<string, (Tensor Down, Tensor Up)> _layers;
    private readonly Dictionary<string, float> _scales;
    private readonly Dictionary<string, string> _sources;

    private LoraWeights(string component, LoraKeyFormat format)
    {
        Component = component;
        Format = format;
        _layers = new(StringComparer.Ordinal);
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
    /// they are the file's layer names without the <c>lora_unet_</c> / <c>lora_te*_</c> prefix, resolved against the
    /// model when fusing.
    /// </summary>
    public IReadOnlyDictionary<string, (Tensor Down, Tensor Up)> Layers => _layers;

    /// <summary>PEFT's scaling of each layer, <c>alpha / r</c> in float32 (1 when the file gives no alpha).</summary>
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
    /// <c>text_encoder_2</c>, ...), in either <see cref="LoraKeyFormat"/> (told from the keys). Every tensor must be the
    /// down, up or alpha tensor of a complete pair, or the load fails.
    /// </summary>
    /// <inheritdoc cref="Load" path="/exception"/>
    public static IReadOnlyDictionary<string, LoraWeights> LoadAll(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"LoRA file not found: {path}", path);
        using var file = SafetensorsFile.Open(path);
        var format = file.Tensors.Keys.Any(k => KohyaPrefixes.Any(p => k.StartsWith(p.Prefix, StringComparison.Ordinal)))
            ? LoraKeyFormat.Kohya : LoraKeyFormat.Peft;
        var layers = new Dictionary<(string Component, string Layer), LayerKeys>();
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
            if (!layers.TryGetValue(id, out var entry)) layers[id] = entry = new LayerKeys(parsed.Stem);
            if (!entry.Set(parsed.Part, key)) repeated.Add(key);
        }
        if (unknown.Count > 0)
            throw new InvalidDataException(format == LoraKeyFormat.Kohya
                ? $"{path}: {unknown.Count} key(s) are not kohya LoRA tensors (lora_unet_ / lora_te_ / lora_te1_ / lora_te2_ + layer + .lora_down.weight, .lora_up.weight or .alpha; LoHa, LoKr, DoRA and other LyCORIS types are not supported), e.g. {string.Join(", ", unknown.Take(3))}."
                : $"{path}: {unknown.Count} key(s) are not component.module.lora_A.weight / lora_B.weight / alpha (nor kohya lora_unet_ / lora_te_ keys), e.g. {string.Join(", ", unknown.Take(3))}.");
        if (repeated.Count > 0)
            throw new InvalidDataException($"{path}: two tensors for the same layer of one component (lora_te_ and lora_te1_ both?): {string.Join(", ", repeated.Take(3))}.");
        var incomplete = layers.Values.Where(l => l.Down is null || l.Up is null).Select(l => l.Stem).ToList();
        if (incomplete.Count > 0)
            throw new InvalidDataException($"{path}: a down (lora_A / lora_down) without its up (lora_B / lora_up) or the reverse, or an alpha alone, for {string.Join(", ", incomplete.Take(3))}.");
        if (layers.Count == 0) throw new InvalidDataException($"{path} has no *.lora_A.weight or *.lora_down.weight tensors.");
        var metadata = format == LoraKeyFormat.Peft ? LoraAdapterMetadata.Read(path, file.Header.Metadata) : null;

        var result = new Dictionary<string, LoraWeights>(StringComparer.Ordinal);
        try
        {
            foreach (var group in layers.GroupBy(p => p.Key.Component).OrderBy(g => g.Key, StringComparer.Ordinal))
            {
                var lora = result[group.Key] = new LoraWeights(group.Key, format);
                foreach (var ((_, name), keys) in group.OrderBy(p => p.Key.Layer, StringComparer.Ordinal))
                    lora.ReadLayer(path, file, name, keys, metadata);
            }
        }
        catch
        {
            foreach (var lora in result.Values) lora.Dispose();
            throw;
        }
        return result;
    }

    private enum Part { Down, Up, Alpha }

    private sealed class LayerKeys(string stem)
    {
        public string Stem { get; } = stem;
        public string? Down { get; private set; }
        public string? Up { get; private set; }
        public string? Alpha { get; private set; }

        public bool Set(Part part, string key)
        {
            if ((part switch { Part.Down => Down, Part.Up => Up, _ => Alpha }) is not null) return false;
            if (part == Part.Down) Down = key;
            else if (part == Part.Up) Up = key;
            else Alpha = key;
            return true;
        }
    }

    private static (string Component, string Layer, string Stem, Part Part)? ParseKey(string key, LoraKeyFormat format)
    {
        if (format == LoraKeyFormat.Kohya)
        {
            int dot = key.IndexOf('.', StringComparison.Ordinal);
            if (dot <= 0) return null;
            string stem = key[..dot];
            Part? part = key[(dot + 1)..] switch { "lora_down.weight" => Part.Down, "lora_up.weight" => Part.Up, "alpha" => Part.Alpha, _ => null };
            var prefix = KohyaPrefixes.FirstOrDefault(p => stem.StartsWith(p.Prefix, StringComparison.Ordinal));
            if (part is null || prefix.Prefix is null || stem.Length == prefix.Prefix.Length) return null;
            return (prefix.Component, stem[prefix.Prefix.Length..], stem, part.Value);
        }
        foreach (var (suffix, p) in new[] { (".lora_A.weight", Part.Down), (".lora_B.weight", Part.Up), (".alpha", Part.Alpha) })
        {
            if (!key.EndsWith(suffix, StringComparison.Ordinal)) continue;
            string stem = key[..^suffix.Length];
            int dot = stem.IndexOf('.', StringComparison.Ordinal);
            return dot > 0 && dot < stem.Length - 1 ? (stem[..dot], stem[(dot + 1)..], stem, p) : null;
        }
        return null;
    }

    private void ReadLayer(string path, SafetensorsFile file, string name, LayerKeys keys, LoraAdapterMetadata? metadata)
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
        long rank = down.shape[0];
        // PEFT's scaling lora_alpha / r, in float32 like the weights it multiplies.
        _scales[name] = alpha is { } x ? x / rank : (float)(metadata?.Scaling(path, Component, name, rank) ?? 1.0);
    }

    /// <summary>
    /// diffusers' <c>load_lora_weights(path)</c> + <c>fuse_lora(lora_scale=scale)</c> for a whole pipeline: reads every
    /// component part of the file, checks each against its model in <paramref name="models"/> (component name -> model,
    /// null for a component the pipeline has not loaded) before any weight changes, then fuses them all. Returns the number
    /// of adapted layers. <paramref name="kohya"/> says whether kohya files are accepted (diffusers' SD / SDXL loaders
    /// convert them; its SD3 loader does not).
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file adapts components these models do not have, or is not a LoRA.</exception>
    /// <exception cref="ArgumentException">A part does not fit its model (missing modules or other sizes).</exception>
    /// <remarks>With <paramref name="fused"/>, the file's matrices are kept there so that the fuse can be undone.</remarks>
    public static int FuseAll(string path, IReadOnlyDictionary<string, nn.Module?> models, double scale = 1.0, bool kohya = true, FusedLoras? fused = null)
    {
        ArgumentNullException.ThrowIfNull(models);
        if (!double.IsFinite(scale)) throw new ArgumentException($"LoRA scale must be finite, got {scale}.", nameof(scale));
        var parts = LoadAll(path);
        try
        {
            var fits = new List<List<Target>>();
            foreach (var (component, lora) in parts)
            {
                if (lora.Format == LoraKeyFormat.Kohya && !kohya)
                    throw new InvalidDataException($"{path} is a kohya LoRA (lora_unet_ / lora_te_ keys), which this pipeline does not read; convert it to diffusers' format.");
                if (!models.TryGetValue(component, out var model))
                    throw new InvalidDataException($"{path} adapts '{component}'; this pipeline's LoRA components are {string.Join(", ", models.Keys)}.");
                if (model is null) throw new InvalidDataException($"{path} adapts {component}, which this pipeline has not loaded.");
                fits.Add(lora.Targets(model));
            }
            foreach (var targets in fits) Fuse(targets, scale);
            int layers = parts.Values.Sum(l => l.Layers.Count);
            if (fused is not null)
            {
                fused.Add(parts, models, scale);
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

    /// <summary>
    /// Throws unless every layer of this LoRA names a Linear or Conv2d of <paramref name="model"/> (for kohya names, once
    /// resolved) of the pair's size, and no two layers name the same module.
    /// </summary>
    /// <exception cref="ArgumentException">A module is missing, of another kind, or of another size than its pair.</exception>
    public void CheckFits(nn.Module model) => Targets(model);

    /// <summary>
    /// Adds <c>scale · (alpha / r) · B A</c> to each adapted module's weight of <paramref name="model"/> (in its dtype and
    /// on its device). Every module is checked before any weight changes; fusing again with <c>-scale</c> takes the LoRA
    /// back out (up to rounding in the model's dtype).
    /// </summary>
    /// <inheritdoc cref="CheckFits" path="/exception"/>
    public void FuseInto(nn.Module model, double scale = 1.0)
    {
        if (!double.IsFinite(scale)) throw new ArgumentException($"LoRA scale must be finite, got {scale}.", nameof(scale));
        Fuse(Targets(model), scale);
    }

    private sealed record Target(Tensor Weight, Tensor Down, Tensor Up, float Scaling);

    private static void Fuse(List<Target> targets, double scale)
    {
        using var noGrad = no_grad();
        foreach (var (weight, down, up, scaling) in targets)
        {
            using var scope = NewDisposeScope();
            // B A; for a conv the 1x1 up times the [r, in, kh, kw] down, which is PEFT's conv delta written as a matmul.
            var product = up.to(weight.device).flatten(1).matmul(down.to(weight.device).flatten(1)).view(weight.shape);
            // PEFT multiplies by lora_alpha / r times the fuse scale; the update and the sum in float32, then one rounding
            // into the model's dtype (bf16 / fp16 round once, not twice).
            var delta = product.mul_(scale * scaling);
            weight.copy_(weight.to(ScalarType.Float32).add_(delta).to(weight.dtype));
        }
    }

    private List<Target> Targets(nn.Module model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var modules = model.named_modules().ToDictionary(m => m.name, m => m.module, StringComparer.Ordinal);
        var kohyaNames = Format == LoraKeyFormat.Kohya ? KohyaModuleNames.Table(model) : null;
        var claimed = new Dictionary<string, string>(StringComparer.Ordinal);
        var targets = new List<Target>();
        foreach (var (layer, (down, up)) in _layers)
        {
            string source = _sources[layer], name = layer;
            if (kohyaNames is not null)
            {
                if (!kohyaNames.TryGetValue(layer, out var resolved))
                    throw new ArgumentException($"The {Component} LoRA adapts '{source}', which names no Linear or Conv2d of this model.");
                name = resolved ?? throw new ArgumentException($"The {Component} LoRA adapts '{source}', which could be more than one module of this model.");
            }
            if (claimed.TryGetValue(name, out var other))
                throw new ArgumentException($"The {Component} LoRA adapts '{name}' twice: '{other}' and '{source}'.");
            claimed[name] = source;
            var weight = modules.GetValueOrDefault(name) switch { Linear l => l.weight!, Conv2d c => c.weight!, _ => null };
            if (weight is null)
                throw new ArgumentException($"The {Component} LoRA adapts '{source}', which is not a Linear or Conv2d of this model.");
            bool fits = weight.dim() == down.dim() && weight.shape[0] == up.shape[0] && weight.shape[1] == down.shape[1]
                && weight.shape.Skip(2).SequenceEqual(down.shape.Skip(2));
            if (!fits)
                throw new ArgumentException($"{Component} LoRA: '{source}' is [{string.Join(", ", weight.shape)}] ('{name}') but its LoRA makes [{up.shape[0]}, {string.Join(", ", down.shape.Skip(1))}].");
            targets.Add(new Target(weight, down, up, _scales[layer]));
        }
        return targets;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var (down, up) in _layers.Values)
        {
            down.Dispose();
            up.Dispose();
        }
        _layers.Clear();
        _scales.Clear();
        _sources.Clear();
    }
}
