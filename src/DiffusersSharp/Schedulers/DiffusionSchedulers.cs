using System.Text.Json.Nodes;
using DiffusersSharp.IO;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// Builds the UNet-pipeline schedulers from diffusers configs: by <c>_class_name</c>, by class name on another
/// scheduler's config (diffusers' <c>OtherScheduler.from_config(pipe.scheduler.config)</c>), or by a short name for the
/// CLI (<c>euler_a</c>, <c>dpmpp_2m_karras</c>, <c>edm_dpmpp_2m</c>...).
/// </summary>
public static class DiffusionSchedulers
{
    private static readonly Dictionary<string, Func<string, IDiffusionScheduler>> Builders = new(StringComparer.Ordinal)
    {
        [nameof(PNDMScheduler)] = json => new PNDMScheduler(ConfigJson.Parse<PNDMSchedulerConfig>(json, nameof(PNDMScheduler))),
        [nameof(DDIMScheduler)] = json => new DDIMScheduler(ConfigJson.Parse<DDIMSchedulerConfig>(json, nameof(DDIMScheduler))),
        [nameof(EulerDiscreteScheduler)] = json => new EulerDiscreteScheduler(ConfigJson.Parse<EulerDiscreteSchedulerConfig>(json, nameof(EulerDiscreteScheduler))),
        [nameof(EulerAncestralDiscreteScheduler)] = json => new EulerAncestralDiscreteScheduler(ConfigJson.Parse<EulerAncestralDiscreteSchedulerConfig>(json, nameof(EulerAncestralDiscreteScheduler))),
        [nameof(LMSDiscreteScheduler)] = json => new LMSDiscreteScheduler(ConfigJson.Parse<LMSDiscreteSchedulerConfig>(json, nameof(LMSDiscreteScheduler))),
        [nameof(HeunDiscreteScheduler)] = json => new HeunDiscreteScheduler(ConfigJson.Parse<HeunDiscreteSchedulerConfig>(json, nameof(HeunDiscreteScheduler))),
        [nameof(UniPCMultistepScheduler)] = json => new UniPCMultistepScheduler(ConfigJson.Parse<UniPCMultistepSchedulerConfig>(json, nameof(UniPCMultistepScheduler))),
        [nameof(KDPM2DiscreteScheduler)] = json => new KDPM2DiscreteScheduler(ConfigJson.Parse<KDPM2DiscreteSchedulerConfig>(json, nameof(KDPM2DiscreteScheduler))),
        [nameof(KDPM2AncestralDiscreteScheduler)] = json => new KDPM2AncestralDiscreteScheduler(ConfigJson.Parse<KDPM2AncestralDiscreteSchedulerConfig>(json, nameof(KDPM2AncestralDiscreteScheduler))),
        [nameof(DPMSolverSinglestepScheduler)] = json => new DPMSolverSinglestepScheduler(ConfigJson.Parse<DPMSolverSinglestepSchedulerConfig>(json, nameof(DPMSolverSinglestepScheduler))),
        [nameof(DEISMultistepScheduler)] = json => new DEISMultistepScheduler(ConfigJson.Parse<DEISMultistepSchedulerConfig>(json, nameof(DEISMultistepScheduler))),
        [nameof(LCMScheduler)] = json => new LCMScheduler(ConfigJson.Parse<LCMSchedulerConfig>(json, nameof(LCMScheduler))),
        [nameof(DPMSolverMultistepScheduler)] = json => new DPMSolverMultistepScheduler(ConfigJson.Parse<DPMSolverMultistepSchedulerConfig>(json, nameof(DPMSolverMultistepScheduler))),
        [nameof(DDPMScheduler)] = json => new DDPMScheduler(ConfigJson.Parse<DDPMSchedulerConfig>(json, nameof(DDPMScheduler))),
        [nameof(TCDScheduler)] = json => new TCDScheduler(ConfigJson.Parse<TCDSchedulerConfig>(json, nameof(TCDScheduler))),
        [nameof(IPNDMScheduler)] = json => new IPNDMScheduler(ConfigJson.Parse<IPNDMSchedulerConfig>(json, nameof(IPNDMScheduler))),
        [nameof(EDMEulerScheduler)] = json => new EDMEulerScheduler(ConfigJson.Parse<EDMEulerSchedulerConfig>(json, nameof(EDMEulerScheduler))),
        [nameof(EDMDPMSolverMultistepScheduler)] = json => new EDMDPMSolverMultistepScheduler(ConfigJson.Parse<EDMDPMSolverMultistepSchedulerConfig>(json, nameof(EDMDPMSolverMultistepScheduler))),
    };

    private static readonly Dictionary<string, (string ClassName, (string Key, JsonNode Value)[] Overrides)> Names = new(StringComparer.Ordinal)
    {
        ["pndm"] = (nameof(PNDMScheduler), Array.Empty<(string, JsonNode)>()),
        ["ddim"] = (nameof(DDIMScheduler), Array.Empty<(string, JsonNode)>()),
        ["euler"] = (nameof(EulerDiscreteScheduler), Array.Empty<(string, JsonNode)>()),
        ["euler_a"] = (nameof(EulerAncestralDiscreteScheduler), Array.Empty<(string, JsonNode)>()),
        ["lms"] = (nameof(LMSDiscreteScheduler), Array.Empty<(string, JsonNode)>()),
        ["dpmpp_2m"] = (nameof(DPMSolverMultistepScheduler), Array.Empty<(string, JsonNode)>()),
        ["dpmpp_2m_karras"] = (nameof(DPMSolverMultistepScheduler), new (string, JsonNode)[] { ("use_karras_sigmas", JsonValue.Create(true)) }),
        ["dpmpp_2m_sde"] = (nameof(DPMSolverMultistepScheduler), new (string, JsonNode)[] { ("algorithm_type", JsonValue.Create("sde-dpmsolver++")) }),
        ["dpmpp_2m_sde_karras"] = (nameof(DPMSolverMultistepScheduler), new (string, JsonNode)[]
        {
            ("algorithm_type", JsonValue.Create("sde-dpmsolver++")), ("use_karras_sigmas", JsonValue.Create(true)),
        }),
        ["heun"] = (nameof(HeunDiscreteScheduler), Array.Empty<(string, JsonNode)>()),
        ["unipc"] = (nameof(UniPCMultistepScheduler), Array.Empty<(string, JsonNode)>()),
        ["euler_karras"] = (nameof(EulerDiscreteScheduler), new (string, JsonNode)[] { ("use_karras_sigmas", JsonValue.Create(true)) }),
        ["kdpm2"] = (nameof(KDPM2DiscreteScheduler), Array.Empty<(string, JsonNode)>()),
        ["kdpm2_a"] = (nameof(KDPM2AncestralDiscreteScheduler), Array.Empty<(string, JsonNode)>()),
        ["dpmpp_singlestep"] = (nameof(DPMSolverSinglestepScheduler), Array.Empty<(string, JsonNode)>()),
        ["deis"] = (nameof(DEISMultistepScheduler), Array.Empty<(string, JsonNode)>()),
        ["lcm"] = (nameof(LCMScheduler), Array.Empty<(string, JsonNode)>()),
        ["ddpm"] = (nameof(DDPMScheduler), Array.Empty<(string, JsonNode)>()),
        ["tcd"] = (nameof(TCDScheduler), Array.Empty<(string, JsonNode)>()),
        ["ipndm"] = (nameof(IPNDMScheduler), Array.Empty<(string, JsonNode)>()),
        // EDM schedulers, for EDM-trained models (Playground v2.5, CosXL): from another EDM scheduler's config.
        ["edm_euler"] = (nameof(EDMEulerScheduler), Array.Empty<(string, JsonNode)>()),
        ["edm_dpmpp_2m"] = (nameof(EDMDPMSolverMultistepScheduler), Array.Empty<(string, JsonNode)>()),
        ["edm_dpmpp_2m_sde"] = (nameof(EDMDPMSolverMultistepScheduler), new (string, JsonNode)[] { ("algorithm_type", JsonValue.Create("sde-dpmsolver++")) }),
    };

    /// <summary>The scheduler classes this factory builds.</summary>
    public static IReadOnlyList<string> KnownClassNames { get; } = Builders.Keys.Order(StringComparer.Ordinal).ToArray();

    /// <summary>The short names of <see cref="FromName"/>.</summary>
    public static IReadOnlyList<string> KnownNames { get; } = Names.Keys.ToArray();

    /// <summary>The class and config overrides behind a short name (e.g. <c>dpmpp_2m_karras</c>: DPM-Solver++ with Karras sigmas).</summary>
    /// <exception cref="ArgumentException">Unknown name.</exception>
    public static (string ClassName, IReadOnlyDictionary<string, JsonNode> Overrides) Resolve(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (!Names.TryGetValue(name, out var entry))
            throw new ArgumentException($"Unknown scheduler name \"{name}\"; known: {string.Join(", ", KnownNames)}.", nameof(name));
        return (entry.ClassName, entry.Overrides.ToDictionary(o => o.Key, o => o.Value));
    }

    /// <summary>Builds the scheduler named by the config's <c>_class_name</c>.</summary>
    /// <exception cref="ArgumentException">No <c>_class_name</c>, or a class not implemented here.</exception>
    public static IDiffusionScheduler FromConfig(JsonObject config)
    {
        ArgumentNullException.ThrowIfNull(config);
        string? className = config["_class_name"] is JsonValue v && v.TryGetValue(out string? s) ? s : null;
        if (className is null)
            throw new ArgumentException($"The scheduler config has no _class_name; known classes: {string.Join(", ", KnownClassNames)}.", nameof(config));
        return FromConfig(className, config);
    }

    /// <summary>
    /// Builds <paramref name="className"/> from another scheduler's config, as diffusers' <c>from_config</c>: keys
    /// listed in <c>_use_default_values</c> are dropped first (the new class gets its own defaults for them), keys the
    /// class does not know are ignored, and <paramref name="overrides"/> (Python keyword arguments) win.
    /// </summary>
    /// <exception cref="ArgumentException">A class not implemented here.</exception>
    /// <exception cref="InvalidDataException">A field has the wrong type.</exception>
    public static IDiffusionScheduler FromConfig(string className, JsonObject baseConfig, IReadOnlyDictionary<string, JsonNode>? overrides = null)
    {
        ArgumentNullException.ThrowIfNull(className);
        ArgumentNullException.ThrowIfNull(baseConfig);
        if (!Builders.TryGetValue(className, out var build))
            throw new ArgumentException($"Unknown or unsupported scheduler class \"{className}\"; known: {string.Join(", ", KnownClassNames)}.", nameof(className));
        return build(EffectiveConfig(baseConfig, overrides).ToJsonString());
    }

    /// <summary>Builds the scheduler of a CLI short name on a pipeline's scheduler config (see <see cref="Resolve"/>).</summary>
    /// <exception cref="ArgumentException">Unknown name.</exception>
    public static IDiffusionScheduler FromName(string name, JsonObject baseConfig)
    {
        var (className, overrides) = Resolve(name);
        return FromConfig(className, baseConfig, overrides);
    }

    /// <summary>Reads <c>scheduler_config.json</c> in a folder (or the file) and builds its <c>_class_name</c>.</summary>
    public static IDiffusionScheduler FromPretrained(string folderOrFile) =>
        FromConfig(SchedulerConfigText.Parse(SchedulerConfigText.Read(folderOrFile)));

    /// <summary>The config a class is built from: without the <c>_use_default_values</c> keys, with the overrides.</summary>
    public static JsonObject EffectiveConfig(JsonObject baseConfig, IReadOnlyDictionary<string, JsonNode>? overrides = null)
    {
        ArgumentNullException.ThrowIfNull(baseConfig);
        var defaults = new HashSet<string>(StringComparer.Ordinal);
        if (baseConfig["_use_default_values"] is JsonArray used)
            foreach (var item in used)
                if (item is JsonValue value && value.TryGetValue(out string? key)) defaults.Add(key);
        var result = new JsonObject();
        foreach (var (key, value) in baseConfig)
        {
            if (defaults.Contains(key) || key == "_use_default_values") continue;
            result[key] = value?.DeepClone();
        }
        if (overrides is not null)
            foreach (var (key, value) in overrides) result[key] = value.DeepClone();
        return result;
    }
}
