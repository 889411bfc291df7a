using System.Text.RegularExpressions;
using DiffusersSharp.IO;

namespace DiffusersSharp.Hub;

/// <summary>
/// Chooses the repo files a diffusers pipeline needs: <c>model_index.json</c>, then, for each non-empty component, the
/// folder's config/tokenizer files and its safetensors weights of the requested variant (falling back to the default
/// weights when the component has no such variant, as diffusers does), skipping the optional components DiffusersSharp
/// does not use (<see cref="UnusedComponents"/>). Never pickle weights (.bin/.ckpt/.pt), other
/// formats, other variants, single-file checkpoints or other folders at the repo root.
/// </summary>
public static partial class HubFileSelector
{
    /// <summary>The pipeline description at the repo root.</summary>
    public const string ModelIndexFile = "model_index.json";

    /// <summary>
    /// Optional components of diffusers' pipelines that DiffusersSharp never loads (the SD 1.x safety checker and its
    /// image processor, IP-Adapter image encoders): not downloaded, as if they were <c>None</c>.
    /// </summary>
    public static readonly IReadOnlySet<string> UnusedComponents = new HashSet<string>(StringComparer.Ordinal)
    {
        "safety_checker", "feature_extractor", "image_encoder",
    };

    /// <summary>model_index.json's class of FLUX.1-Redux (diffusers' <c>FluxPriorReduxPipeline</c>), whose image encoder and
    /// feature extractor are what it runs.</summary>
    public const string FluxPriorReduxPipelineClass = "FluxPriorReduxPipeline";

    /// <summary>
    /// Whether <paramref name="component"/> of a pipeline of class <paramref name="pipelineClass"/> is one DiffusersSharp
    /// never loads (<see cref="UnusedComponents"/>), except where that pipeline runs it: FLUX.1-Redux's
    /// <c>image_encoder</c> (SigLIP) and <c>feature_extractor</c> (its SiglipImageProcessor config).
    /// </summary>
    public static bool IsUnused(string component, string? pipelineClass) =>
        UnusedComponents.Contains(component) && pipelineClass != FluxPriorReduxPipelineClass;

    private static readonly string[] SideFileExtensions = [".json", ".txt", ".model", ".tiktoken"];
    private static readonly string[] OtherWeightExtensions =
        [".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".h5", ".onnx", ".onnx_data", ".pb", ".gguf", ".ot"];

    /// <summary>
    /// The files to fetch, from the repo's file list and its <c>model_index.json</c>; for the <paramref name="configOnly"/>
    /// components (weights from a single-file checkpoint) only their config and tokenizer files.
    /// </summary>
    /// <exception cref="HubException">A component folder is missing, or holds no safetensors weights usable here.</exception>
    public static IReadOnlyList<string> Select(IReadOnlyCollection<string> repoFiles, ModelIndex index, string? variant, string repoId,
        IReadOnlySet<string>? configOnly = null)
    {
        var selected = new List<string> { ModelIndexFile };
        foreach (var (component, spec) in index.Components.OrderBy(c => c.Key, StringComparer.Ordinal))
        {
            if (spec.IsEmpty || IsUnused(component, index.ClassName)) continue;
            string prefix = component + "/";
            var names = repoFiles.Where(f => f.StartsWith(prefix, StringComparison.Ordinal) && f.IndexOf('/', prefix.Length) < 0)
                .Select(f => f[prefix.Length..]).ToList();
            if (names.Count == 0)
                throw new HubException(HubErrorKind.EntryNotFound,
                    $"{repoId}: model_index.json names component '{component}' ({spec.ClassName}) but the repo has no '{component}/' folder.");
            var files = configOnly?.Contains(component) == true
                ? names.Where(n => SideFileExtensions.Any(e => n.EndsWith(e, StringComparison.OrdinalIgnoreCase)) && ParseSafetensors(n) is null && !IsIndex(n))
                : ComponentFiles(names, variant, repoId, component);
            foreach (var name in files) selected.Add(prefix + name);
        }
        return selected;
    }

    /// <summary>The model config at the root of a single-model repo (a ControlNet, a T2I-Adapter: no model_index.json).</summary>
    public const string ModelConfigFile = "config.json";

    /// <summary>
    /// The files to fetch from a single-model repo (diffusers' <c>ModelMixin.from_pretrained(repo)</c>: a ControlNet or
    /// T2I-Adapter repo with <c>config.json</c> and the weights at its root): the root's config / side files and its
    /// safetensors weights of the requested variant (else the default ones), nothing from subfolders.
    /// </summary>
    /// <exception cref="HubException">The root holds no safetensors weights usable here.</exception>
    public static IReadOnlyList<string> SelectModel(IReadOnlyCollection<string> repoFiles, string? variant, string repoId) =>
        SelectModel(repoFiles, variant, repoId, "");

    /// <summary>As <see cref="SelectModel(IReadOnlyCollection{string}, string?, string)"/> for a model folder inside the repo
    /// (<paramref name="folder"/>, e.g. h94/IP-Adapter's <c>models/image_encoder</c>; "" for the root): its direct files.</summary>
    /// <exception cref="HubException">The folder holds no safetensors weights usable here, or no config.json.</exception>
    public static IReadOnlyList<string> SelectModel(IReadOnlyCollection<string> repoFiles, string? variant, string repoId, string folder)
    {
        string prefix = folder.Length == 0 ? "" : folder.TrimEnd('/') + "/";
        string where = folder.Length == 0 ? "at its root" : $"in {folder}/";
        var names = repoFiles.Where(f => f.StartsWith(prefix, StringComparison.Ordinal) && f.IndexOf('/', prefix.Length) < 0)
            .Select(f => f[prefix.Length..]).ToList();
        if (!names.Contains(ModelConfigFile))
            throw new HubException(HubErrorKind.EntryNotFound, $"{repoId} has no {ModelConfigFile} {where}: not a diffusers / transformers model folder.");
        var files = ComponentFiles(names, variant, repoId, folder.Length == 0 ? "(the repo root)" : folder).ToList();
        if (!files.Any(f => ParseSafetensors(f) is not null))
            throw new HubException(HubErrorKind.UnsupportedRepo, $"{repoId} has a config.json but no safetensors weights {where}.");
        return files.Select(f => prefix + f).ToList();
    }

    private static IEnumerable<string> ComponentFiles(List<string> names, string? variant, string repoId, string component)
    {
        var weights = new List<(string Name, string? Variant)>();
        bool otherWeights = false;
        foreach (var name in names)
        {
            if (ParseSafetensors(name) is { } parsed)
            {
                if (WeightFiles.Stems.Contains(parsed.Stem)) weights.Add((name, parsed.Variant));
            }
            else if (IsIndex(name) || OtherWeightExtensions.Any(e => name.EndsWith(e, StringComparison.OrdinalIgnoreCase)))
                otherWeights = true;
            else if (SideFileExtensions.Any(e => name.EndsWith(e, StringComparison.OrdinalIgnoreCase)))
                yield return name;
        }
        if (weights.Count == 0)
        {
            if (otherWeights)
                throw new HubException(HubErrorKind.UnsupportedRepo,
                    $"{repoId}: component '{component}' has no safetensors weights (only .bin/.ckpt or other formats), which DiffusersSharp does not read.");
            yield break;
        }
        string? chosen = variant is not null && weights.Any(w => w.Variant == variant) ? variant : null;
        if (chosen is null && weights.All(w => w.Variant is not null))
        {
            string available = string.Join(", ", weights.Select(w => w.Variant).Distinct());
            throw new HubException(HubErrorKind.UnsupportedRepo, variant is null
                ? $"{repoId}: component '{component}' only has variant weights ({available}); pass the variant (--variant {weights[0].Variant})."
                : $"{repoId}: component '{component}' has no '{variant}' weights, only {available}.");
        }
        foreach (var w in weights)
            if (w.Variant == chosen) yield return w.Name;
    }

    private static bool IsIndex(string name) => name.Contains(".index", StringComparison.Ordinal) && name.EndsWith(".json", StringComparison.Ordinal)
        && (name.Contains(".bin.", StringComparison.Ordinal) || name.Contains(".msgpack.", StringComparison.Ordinal));

    /// <summary>
    /// Stem and variant of a safetensors weight file or its shard index: <c>model.safetensors</c>,
    /// <c>model-00001-of-00002.safetensors</c>, <c>model.fp16.safetensors</c>, <c>model.fp16-00001-of-00002.safetensors</c>,
    /// <c>model.safetensors.index.json</c>, <c>model.safetensors.index.fp16.json</c>, <c>model.fp16.safetensors.index.json</c>.
    /// </summary>
    internal static (string Stem, string? Variant)? ParseSafetensors(string name)
    {
        string core;
        if (name.EndsWith(".safetensors", StringComparison.Ordinal)) core = name[..^".safetensors".Length];
        else if (name.EndsWith(".json", StringComparison.Ordinal) && name.Contains(".safetensors.index", StringComparison.Ordinal))
            core = name[..^".json".Length].Replace(".safetensors.index", "", StringComparison.Ordinal);
        else return null;
        core = ShardRegex().Replace(core, "");
        int dot = core.IndexOf('.');
        if (dot < 0) return (core, null);
        string v = core[(dot + 1)..];
        return v.Length == 0 || v.Contains('.') ? null : (core[..dot], v);
    }

    [GeneratedRegex(@"-\d{5}-of-\d{5}")]
    private static partial Regex ShardRegex();
}
