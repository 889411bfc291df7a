using System.Text.Json.Nodes;
using DiffusersSharp.Schedulers;

namespace DiffusersSharp.Pipelines;

/// <summary>
/// Components whose pipelines take any of <see cref="DiffusionSchedulers"/>' discrete schedulers (the UNet families and
/// PixArt): the scheduler config every call builds its own scheduler from, and the swap diffusers users write as
/// <c>pipe.scheduler = OtherScheduler.from_config(pipe.scheduler.config, **overrides)</c>.
/// </summary>
public abstract class SwappableSchedulerComponents : PipelineComponents
{
    private JsonObject _schedulerConfig = new();

    /// <summary>
    /// The scheduler config every call builds its scheduler from (its own instance: schedulers hold per-call state), with
    /// its <c>_class_name</c>. Loaded from the scheduler folder; <see cref="UseScheduler(string)"/> changes it. Set at
    /// construction it is taken as <see cref="UseScheduler(JsonObject)"/> takes it (checked, <c>from_config</c> semantics).
    /// </summary>
    /// <exception cref="ArgumentException">(init) An unknown class or an invalid config.</exception>
    public JsonObject SchedulerConfig
    {
        get => _schedulerConfig;
        init => UseScheduler(value);
    }

    /// <summary>The class of <see cref="SchedulerConfig"/>.</summary>
    public string SchedulerClassName => SchedulerConfig["_class_name"]?.GetValue<string>() ?? "";

    /// <summary>
    /// Swaps the scheduler, as <c>pipe.scheduler = OtherScheduler.from_config(pipe.scheduler.config)</c>: a diffusers class
    /// name, or a short name of <see cref="DiffusionSchedulers"/> (<c>euler_a</c>, <c>dpmpp_2m_karras</c>...).
    /// </summary>
    /// <exception cref="ArgumentException">An unknown scheduler.</exception>
    public void UseScheduler(string nameOrClass) => UseScheduler(nameOrClass, new Dictionary<string, JsonNode>());

    /// <summary>Throws unless <paramref name="nameOrClass"/> is a scheduler short name or class that <see cref="UseScheduler(string)"/> takes.</summary>
    /// <exception cref="ArgumentException">An unknown scheduler, with the known ones.</exception>
    public static void CheckSchedulerName(string nameOrClass)
    {
        if (!DiffusionSchedulers.KnownNames.Contains(nameOrClass) && !DiffusionSchedulers.KnownClassNames.Contains(nameOrClass))
            throw new ArgumentException($"Unknown scheduler '{nameOrClass}'; known: {string.Join(", ", DiffusionSchedulers.KnownNames)} or a class: {string.Join(", ", DiffusionSchedulers.KnownClassNames)}.");
    }

    /// <summary>
    /// Swaps the scheduler with keyword arguments, as <c>pipe.scheduler = OtherScheduler.from_config(pipe.scheduler.config,
    /// **overrides)</c> (e.g. <c>timestep_spacing</c>): a class or short name as <see cref="UseScheduler(string)"/> takes,
    /// whose own overrides <paramref name="overrides"/> win over.
    /// </summary>
    /// <exception cref="ArgumentException">An unknown scheduler, or a config the class refuses.</exception>
    public void UseScheduler(string nameOrClass, IReadOnlyDictionary<string, JsonNode> overrides)
    {
        ArgumentNullException.ThrowIfNull(nameOrClass);
        ArgumentNullException.ThrowIfNull(overrides);
        CheckSchedulerName(nameOrClass);
        var (className, named) = DiffusionSchedulers.KnownNames.Contains(nameOrClass)
            ? DiffusionSchedulers.Resolve(nameOrClass) : (nameOrClass, new Dictionary<string, JsonNode>());
        var merged = named.ToDictionary();
        foreach (var (key, value) in overrides) merged[key] = value;
        var config = DiffusionSchedulers.EffectiveConfig(SchedulerConfig, merged);
        config["_class_name"] = className;
        UseScheduler(config);
    }

    /// <summary>Uses a complete scheduler config (with <c>_class_name</c>), as <c>pipe.scheduler = Scheduler.from_config(config)</c>:
    /// keys listed in its <c>_use_default_values</c> are dropped (the class defaults apply).</summary>
    /// <exception cref="ArgumentException">An unknown class or an invalid config.</exception>
    public void UseScheduler(JsonObject config)
    {
        ArgumentNullException.ThrowIfNull(config);
        var effective = DiffusionSchedulers.EffectiveConfig(config);
        using (DiffusionSchedulers.FromConfig(effective)) { } // check it before taking it
        _schedulerConfig = effective;
    }

    /// <summary>A fresh scheduler for one call. It runs with every value of <see cref="SchedulerConfig"/>, those of
    /// keys its <c>_use_default_values</c> lists too (only the outdated-config fix-ups put keys there): that list only
    /// tells <c>from_config</c> which keys to leave to the next class's defaults.</summary>
    public IDiffusionScheduler CreateScheduler()
    {
        var config = (JsonObject)SchedulerConfig.DeepClone();
        config.Remove("_use_default_values");
        return DiffusionSchedulers.FromConfig(config);
    }

    /// <summary>Replaces the config as it is, unchecked (a family's own fix-ups of a config it already took).</summary>
    private protected void ReplaceSchedulerConfig(JsonObject config) => _schedulerConfig = config;
}
