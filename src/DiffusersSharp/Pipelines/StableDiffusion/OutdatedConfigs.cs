using System.Text.Json.Nodes;
using DiffusersSharp.Models.Unets;
using DiffusersSharp.Schedulers;

namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>
/// The rewrites of outdated configs that diffusers' <c>StableDiffusionPipeline</c>, <c>StableDiffusionImg2ImgPipeline</c>
/// and <c>StableDiffusionInpaintPipeline</c> constructors make (with a deprecation warning) so that early hub repos
/// sample as intended: <c>steps_offset</c> 1, <c>clip_sample</c> false (not inpainting), <c>skip_prk_steps</c> true
/// (inpainting only), and a UNet <c>sample_size</c> of at least 64 for configs older than diffusers 0.9. The ControlNet,
/// adapter and SDXL pipelines make none of them.
/// </summary>
internal static class OutdatedConfigs
{
    /// <summary>Which scheduler fix-ups a pipeline class makes.</summary>
    public readonly record struct SchedulerFixups(bool ClipSample, bool SkipPrkSteps);

    /// <summary>Text-to-image and image-to-image: steps_offset and clip_sample.</summary>
    public static SchedulerFixups TextAndImageToImage => new(ClipSample: true, SkipPrkSteps: false);

    /// <summary>Inpainting: steps_offset and skip_prk_steps.</summary>
    public static SchedulerFixups Inpaint => new(ClipSample: false, SkipPrkSteps: true);

    /// <summary>
    /// <paramref name="config"/> (a scheduler's own config, <c>_class_name</c> included) with the fix-ups applied, as
    /// diffusers writes them into <c>scheduler._internal_dict</c>. The test is on the value the scheduler runs with: the
    /// file's, else the class default (DDIM's and DDPM's clip_sample is true, PNDM's skip_prk_steps false, steps_offset
    /// 0 where the class has it). A key the file did not have is added to <c>_use_default_values</c>, which it is on in
    /// diffusers too: the fixed value then holds for this scheduler, and a scheduler made from this config with
    /// <c>from_config</c> gets its own default again.
    /// </summary>
    public static JsonObject Fix(JsonObject config, SchedulerFixups fixups)
    {
        var result = (JsonObject)config.DeepClone();
        string className = result["_class_name"]?.GetValue<string>() ?? "";
        Replace(result, "steps_offset", Value(result, "steps_offset", StepsOffsetDefault(className)) is int offset && offset != 1, 1);
        if (fixups.ClipSample)
            Replace(result, "clip_sample", Value(result, "clip_sample", ClipSampleDefault(className)) is true, false);
        if (fixups.SkipPrkSteps)
            Replace(result, "skip_prk_steps", Value(result, "skip_prk_steps", SkipPrkStepsDefault(className)) is false, true);
        return result;
    }

    /// <summary>
    /// Whether diffusers would raise the UNet's <c>sample_size</c> to 64: a config written by diffusers before 0.9.0
    /// (<c>_diffusers_version</c>, compared without its pre-release part) with a single <c>sample_size</c> under 64.
    /// </summary>
    public static bool UnetSampleSizeTooSmall(UNet2DConditionModelConfig config) =>
        config.SampleSize is { IsScalar: true } size && size.Scalar < 64
        && config.DiffusersVersion is { } text && ReleaseOf(text) is { } version && version < new Version(0, 9, 0);

    /// <summary>The release part of a Python package version ("0.8.0.dev0" -> 0.8.0), or null if it has none.</summary>
    private static Version? ReleaseOf(string text)
    {
        var numbers = new List<int>();
        foreach (string part in text.Split('.'))
        {
            int digits = 0;
            while (digits < part.Length && char.IsAsciiDigit(part[digits])) digits++;
            if (digits == 0) break;
            numbers.Add(int.Parse(part.AsSpan(0, digits), System.Globalization.CultureInfo.InvariantCulture));
            if (digits < part.Length) break; // "0rc1": the release ends here
        }
        if (numbers.Count == 0) return null;
        while (numbers.Count < 3) numbers.Add(0);
        return new Version(numbers[0], numbers[1], numbers[2]);
    }

    // The scheduler __init__ defaults, from the typed configs; null where diffusers' class has no such parameter (then
    // getattr's fallback in the pipeline makes the fix-up a no-op unless the file has the key).
    private static object? StepsOffsetDefault(string className) => className switch
    {
        nameof(DPMSolverSinglestepScheduler) or nameof(IPNDMScheduler) or nameof(EDMEulerScheduler) or nameof(EDMDPMSolverMultistepScheduler) => null,
        _ when DiffusionSchedulers.KnownClassNames.Contains(className) => new DDIMSchedulerConfig().StepsOffset,
        _ => null,
    };

    private static object? ClipSampleDefault(string className) => className switch
    {
        nameof(DDIMScheduler) => new DDIMSchedulerConfig().ClipSample,
        nameof(DDPMScheduler) => new DDPMSchedulerConfig().ClipSample,
        _ => null, // Heun, LCM and TCD default to false: nothing to fix unless the file says true
    };

    private static object? SkipPrkStepsDefault(string className) =>
        className == nameof(PNDMScheduler) ? new PNDMSchedulerConfig().SkipPrkSteps : null;

    /// <summary>The value the scheduler runs with: the config's (an int or a bool), else the class default.</summary>
    private static object? Value(JsonObject config, string key, object? classDefault) => config[key] switch
    {
        JsonValue v when v.TryGetValue(out bool b) => b,
        JsonValue v when v.TryGetValue(out int i) => i,
        JsonValue v when v.TryGetValue(out double d) && d == Math.Floor(d) => (int)d,
        null when !config.ContainsKey(key) => classDefault,
        var other => other?.ToJsonString(),
    };

    private static void Replace(JsonObject config, string key, bool outdated, JsonNode value)
    {
        if (!outdated) return;
        if (!config.ContainsKey(key))
        {
            if (config["_use_default_values"] is not JsonArray used) config["_use_default_values"] = used = [];
            used.Add(key);
        }
        config[key] = value;
    }
}
