using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Schedulers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Sana;

/// <summary>
/// The scheduler of one Sana call: DPMSolverMultistepScheduler (what the released Sana models ship: flow sigmas with
/// flow_prediction) or FlowMatchEulerDiscreteScheduler (what diffusers' own Sana tests run). Both give diffusers'
/// <c>retrieve_timesteps</c> schedule and <c>scheduler.step(noise_pred, t, latents, generator=...)</c>. SANA-Sprint's
/// SCMScheduler is carried in <see cref="Scm"/> for SanaSprintPipeline, which drives it itself.
/// </summary>
internal sealed class SanaScheduler : IDisposable
{
    private readonly DPMSolverMultistepScheduler? _dpm;
    private readonly FlowMatchEulerDiscreteScheduler? _euler;

    private SanaScheduler(DPMSolverMultistepScheduler? dpm, FlowMatchEulerDiscreteScheduler? euler, SCMScheduler? scm = null) =>
        (_dpm, _euler, Scm) = (dpm, euler, scm);

    /// <summary>SANA-Sprint's consistency sampler, when the config names SCMScheduler (null otherwise).</summary>
    public SCMScheduler? Scm { get; }

    /// <summary>Builds the scheduler a config names.</summary>
    /// <exception cref="ArgumentException">Another scheduler class, or a config that scheduler refuses.</exception>
    /// <exception cref="NotSupportedException">An option of that scheduler DiffusersSharp does not implement.</exception>
    public static SanaScheduler Create(JsonObject config)
    {
        string className = config["_class_name"]?.GetValue<string>() ?? "";
        string json = config.ToJsonString();
        return className switch
        {
            nameof(DPMSolverMultistepScheduler) => new(new DPMSolverMultistepScheduler(ConfigJson.Parse<DPMSolverMultistepSchedulerConfig>(json, className)), null),
            nameof(FlowMatchEulerDiscreteScheduler) => new(null, new FlowMatchEulerDiscreteScheduler(ConfigJson.Parse<FlowMatchEulerDiscreteSchedulerConfig>(json, className))),
            nameof(SCMScheduler) => new(null, null, new SCMScheduler(ConfigJson.Parse<SCMSchedulerConfig>(json, className))),
            _ => throw new ArgumentException(
                $"Sana pipelines run DPMSolverMultistepScheduler or FlowMatchEulerDiscreteScheduler (SANA-Sprint: SCMScheduler); the scheduler config names \"{className}\"."),
        };
    }

    /// <summary>The diffusers class name.</summary>
    public string ClassName => _dpm?.ClassName ?? (Scm is not null ? nameof(SCMScheduler) : nameof(FlowMatchEulerDiscreteScheduler));

    /// <summary>The schedule of <paramref name="steps"/> steps.</summary>
    public void SetTimesteps(int steps, Device device)
    {
        if (_dpm is not null) _dpm.SetTimesteps(steps, device);
        else _euler!.SetTimesteps(steps, device); // SANA-Sprint sets its SCM schedule itself
    }

    /// <summary>The timesteps of the last <see cref="SetTimesteps"/>.</summary>
    public IReadOnlyList<float> TimestepValues => _dpm?.TimestepValues ?? _euler!.TimestepValues;

    /// <summary>One step from <paramref name="latents"/> at <paramref name="t"/> with the model output (the generator feeds
    /// DPM's SDE variants; the Euler step draws nothing without stochastic sampling).</summary>
    public Tensor Step(Tensor noisePred, float t, Tensor latents, Runtime.Generator? generator) =>
        _dpm is not null ? _dpm.Step(noisePred, t, latents, generator) : _euler!.Step(noisePred, t, latents);

    /// <summary>Frees the scheduler's tensors.</summary>
    public void Dispose()
    {
        _dpm?.Dispose();
        _euler?.Dispose();
    }
}
