using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// A noise scheduler for the UNet pipelines (Stable Diffusion 1.x / 2.x, SDXL): diffusers' <c>SchedulerMixin</c> API as
/// those pipelines call it. Implementations compute their schedules on the CPU in diffusers' float32 / float64 order, so
/// timesteps and sigmas equal the Python ones, and keep diffusers' per-generation state (step index, multistep history).
/// </summary>
/// <remarks>Stateful and not thread-safe, as in diffusers: one scheduler per running generation. Dispose frees the
/// tensors it owns.</remarks>
public interface IDiffusionScheduler : IDisposable
{
    /// <summary>The diffusers class name (<c>PNDMScheduler</c>, <c>EulerDiscreteScheduler</c>...).</summary>
    string ClassName { get; }

    /// <summary>Model evaluations per timestep entry (diffusers' <c>order</c>: 2 for Heun, whose timesteps repeat, else 1).</summary>
    int Order { get; }

    /// <summary>The training schedule's length (<c>config.num_train_timesteps</c>, 1000 for Stable Diffusion): the scale of
    /// the SDXL pipelines' <c>denoising_start</c> / <c>denoising_end</c> cutoffs.</summary>
    int NumTrainTimesteps { get; }

    /// <summary>What the model predicts: <c>epsilon</c>, <c>v_prediction</c> or <c>sample</c>.</summary>
    string PredictionType { get; }

    /// <summary>The standard deviation of the initial noise (diffusers' <c>init_noise_sigma</c>); valid after <see cref="SetTimesteps"/>.</summary>
    double InitNoiseSigma { get; }

    /// <summary>The timesteps of the last <see cref="SetTimesteps"/>, as float32 values (integer schedulers give whole numbers).</summary>
    IReadOnlyList<float> TimestepValues { get; }

    /// <summary>The number of inference steps of the last <see cref="SetTimesteps"/>, or null before it.</summary>
    int? NumInferenceSteps { get; }

    /// <summary>The first step index set by <see cref="SetBeginIndex"/> (img2img / inpaint), or null.</summary>
    int? BeginIndex { get; }

    /// <summary>Computes the inference schedule and resets the per-generation state (diffusers' <c>set_timesteps</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="numInferenceSteps"/> is below 1 or above the training steps.</exception>
    void SetTimesteps(int numInferenceSteps, Device? device = null);

    /// <summary>Sets the index of the first step (diffusers' <c>set_begin_index</c>, used by img2img and inpaint).</summary>
    void SetBeginIndex(int beginIndex);

    /// <summary>Scales the denoising model input for <paramref name="timestep"/> (identity for DDPM-style schedulers,
    /// <c>x / sqrt(sigma² + 1)</c> for the sigma-based ones). Returns a new tensor.</summary>
    Tensor ScaleModelInput(Tensor sample, float timestep);

    /// <summary>One denoising step from <paramref name="timestep"/>: the previous sample (diffusers' <c>step(...).prev_sample</c>).
    /// Ancestral / stochastic schedulers draw their noise from <paramref name="generator"/>.</summary>
    Tensor Step(Tensor modelOutput, float timestep, Tensor sample, Runtime.Generator? generator = null);

    /// <summary>Noises <paramref name="originalSamples"/> to <paramref name="timestep"/> (diffusers' <c>add_noise</c>,
    /// with its step-index rules for the sigma-based schedulers).</summary>
    Tensor AddNoise(Tensor originalSamples, Tensor noise, float timestep);
}
