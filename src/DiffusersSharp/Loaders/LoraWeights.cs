using DiffusersSharp.IO;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Loaders;

/// <summary>
/// A LoRA in the format diffusers' <c>save_lora_weights</c> writes (PEFT): for each adapted <c>Linear</c> of a
/// component, <c>{component}.{module}.lora_A.weight</c> [r, in] and <c>{component}.{module}.lora_B.weight</c> [out, r].
/// Fusing adds <c>scale · (alpha / r) · B A</c> to the Linear's weight, which is what diffusers computes unfused
/// (<c>W x + scale · (alpha / r) · B (A x)</c>) up to float rounding; <c>scale</c> plays the part of diffusers'
/// <c>joint_attention_kwargs={"scale": s}</c> or <c>fuse_lora(lora_scale=s)</c>.
/// </summary>
/// <remarks>
/// diffusers' files carry no alpha unless written with adapter metadata; then diffusers (through PEFT) uses
/// <c>alpha = r</c>, a factor of 1, and so does this class.
/// </remarks>
public sealed class LoraWeights : IDisposable
{
    private readonly Dictionary<string, (Tensor Down, Tensor Up)> _layers;

    private LoraWeights(string component, Dictionary<string, (Tensor Down, Tensor Up)> layers)
    {
        Component = component;
        _layers = layers;
    }

    /// <summary>The pipeline component the LoRA adapts (the key prefix, e.g. <c>transformer</c>).</summary>
    public string Component { get; }

    /// <summary>Adapted module paths (as in the component's state dict, without <c>.weight</c>) and their A (down) and B (up) matrices.</summary>
    public IReadOnlyDictionary<string, (Tensor Down, Tensor Up)> Layers => _layers;

    /// <summary>Reads a LoRA file for one component; every tensor in it must be a lora_A / lora_B pair of that component.</summary>
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
    /// Reads a LoRA file for every component it adapts (the first segment of its keys: <c>transformer</c>,
    /// <c>text_encoder</c>, <c>text_encoder_2</c>, ...); every tensor must be a lora_A / lora_B pair.
    /// </summary>
    /// <inheritdoc cref="Load" path="/exception"/>
    public static IReadOnlyDictionary<string, LoraWeights> LoadAll(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"LoRA file not found: {path}", path);
        using var file = SafetensorsFile.Open(path);
        var pairs = new Dictionary<(string Component, string Module), (string? Down, string? Up)>();
        var unknown = new List<string>();
        foreach (var key in file.Tensors.Keys)
        {
            int dot = key.IndexOf('.', StringComparison.Ordinal);
            bool down = key.EndsWith(".lora_A.weight", StringComparison.Ordinal), up = key.EndsWith(".lora_B.weight", StringComparison.Ordinal);
            if (dot <= 0 || !(down || up) || key.Length - dot - 1 <= ".lora_A.weight".Length)
            {
                unknown.Add(key);
                continue;
            }
            var id = (key[..dot], key[(dot + 1)..^".lora_A.weight".Length]);
            var pair = pairs.GetValueOrDefault(id);
            pairs[id] = down ? (key, pair.Up) : (pair.Down, key);
        }
        if (unknown.Count > 0)
            throw new InvalidDataException($"{path}: {unknown.Count} keys are not component.module.lora_A/lora_B.weight (alphas and other formats are not supported), e.g. {string.Join(", ", unknown.Take(3))}.");
        var unpaired = pairs.Where(p => p.Value.Down is null || p.Value.Up is null).Select(p => $"{p.Key.Component}.{p.Key.Module}").ToList();
        if (unpaired.Count > 0) throw new InvalidDataException($"{path}: lora_A without lora_B or the reverse for {string.Join(", ", unpaired.Take(3))}.");
        if (pairs.Count == 0) throw new InvalidDataException($"{path} has no *.lora_A.weight tensors.");

        var result = new Dictionary<string, LoraWeights>(StringComparer.Ordinal);
        try
        {
            foreach (var group in pairs.GroupBy(p => p.Key.Component).OrderBy(g => g.Key, StringComparer.Ordinal))
            {
                var layers = new Dictionary<string, (Tensor, Tensor)>(StringComparer.Ordinal);
                result[group.Key] = new LoraWeights(group.Key, layers);
                foreach (var ((_, module), (downKey, upKey)) in group.OrderBy(p => p.Key.Module, StringComparer.Ordinal))
                {
                    var down = file.Read(downKey!, ScalarType.Float32);
                    var up = file.Read(upKey!, ScalarType.Float32);
                    layers[module] = (down, up);
                    if (down.dim() != 2 || up.dim() != 2 || up.shape[1] != down.shape[0])
                        throw new InvalidDataException($"{path}: {group.Key}.{module} has lora_A [{string.Join(", ", down.shape)}] and lora_B [{string.Join(", ", up.shape)}]; expected [r, in] and [out, r].");
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
    /// diffusers' <c>load_lora_weights(path)</c> + <c>fuse_lora(lora_scale=scale)</c> for a whole pipeline: reads every
    /// component part of the file, checks each against its model in <paramref name="models"/> (component name -> model,
    /// null for a component the pipeline has not loaded) before any weight changes, then fuses them all. Returns the number
    /// of adapted layers.
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file adapts components these models do not have, or is not a LoRA.</exception>
    /// <exception cref="ArgumentException">A part does not fit its model (missing modules or other sizes).</exception>
    public static int FuseAll(string path, IReadOnlyDictionary<string, nn.Module?> models, double scale = 1.0)
    {
        ArgumentNullException.ThrowIfNull(models);
        if (!double.IsFinite(scale)) throw new ArgumentException($"LoRA scale must be finite, got {scale}.", nameof(scale));
        var parts = LoadAll(path);
        try
        {
            var fits = new List<(LoraWeights Lora, nn.Module Model)>();
            foreach (var (component, lora) in parts)
            {
                if (!models.TryGetValue(component, out var model))
                    throw new InvalidDataException($"{path} adapts '{component}'; this pipeline's LoRA components are {string.Join(", ", models.Keys)}.");
                if (model is null) throw new InvalidDataException($"{path} adapts {component}, which this pipeline has not loaded.");
                lora.CheckFits(model);
                fits.Add((lora, model));
            }
            foreach (var (lora, model) in fits) lora.FuseInto(model, scale);
            return parts.Values.Sum(l => l.Layers.Count);
        }
        finally
        {
            foreach (var lora in parts.Values) lora.Dispose();
        }
    }

    /// <summary>Throws unless every adapted module of this LoRA is a Linear of <paramref name="model"/> of the pair's size.</summary>
    /// <exception cref="ArgumentException">A module is missing, not a Linear, or of another size than its pair.</exception>
    public void CheckFits(nn.Module model) => Targets(model);

    /// <summary>
    /// Adds <c>scale · B A</c> to each adapted Linear's weight of <paramref name="model"/> (in its dtype and on its device).
    /// Every module is checked before any weight changes; fusing again with <c>-scale</c> takes the LoRA back out (up to
    /// rounding in the model's dtype).
    /// </summary>
    /// <exception cref="ArgumentException">A module is missing, not a Linear, or of another size than its pair.</exception>
    public void FuseInto(nn.Module model, double scale = 1.0)
    {
        if (!double.IsFinite(scale)) throw new ArgumentException($"LoRA scale must be finite, got {scale}.", nameof(scale));
        var targets = Targets(model);
        using var noGrad = no_grad();
        foreach (var (linear, down, up) in targets)
        {
            using var scope = NewDisposeScope();
            var weight = linear.weight!;
            // The update and the sum in float32, then one rounding into the model's dtype (bf16 / fp16 round once, not twice).
            var delta = up.to(weight.device).matmul(down.to(weight.device)).mul_(scale);
            weight.copy_(weight.to(ScalarType.Float32).add_(delta).to(weight.dtype));
        }
    }

    private List<(Linear Linear, Tensor Down, Tensor Up)> Targets(nn.Module model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var modules = model.named_modules().ToDictionary(m => m.name, m => m.module, StringComparer.Ordinal);
        var targets = new List<(Linear Linear, Tensor Down, Tensor Up)>();
        foreach (var (name, (down, up)) in _layers)
        {
            if (!modules.TryGetValue(name, out var module) || module is not Linear linear)
                throw new ArgumentException($"The {Component} LoRA adapts '{name}', which is not a Linear of this model.");
            if (linear.weight!.shape[0] != up.shape[0] || linear.weight.shape[1] != down.shape[1])
                throw new ArgumentException($"{Component} LoRA: '{name}' is [{string.Join(", ", linear.weight.shape)}] but its LoRA makes [{up.shape[0]}, {down.shape[1]}].");
            targets.Add((linear, down, up));
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
    }
}
