using DiffusersSharp.Schedulers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines;

/// <summary>The scheduler step of the pipelines that pass diffusers' <c>prepare_extra_step_kwargs</c> to it.</summary>
internal static class SchedulerSteps
{
    /// <summary>
    /// One step with diffusers' <c>prepare_extra_step_kwargs</c>: <paramref name="eta"/> goes only to a step that takes it
    /// (DDIM, TCD), the generator to every step. A list of generators draws that noise per image, as <c>randn_tensor</c> does.
    /// </summary>
    public static Tensor Step(IDiffusionScheduler scheduler, Tensor noisePred, float t, Tensor latents, double eta,
        Runtime.Generator? generator, IReadOnlyList<Runtime.Generator>? generators)
    {
        if (scheduler is not IEtaStepScheduler ddim) return scheduler.Step(noisePred, t, latents, generator);
        if (eta > 0 && generators is { Count: > 1 } list)
        {
            using var noise = RandomDraws.Randn(noisePred.shape, null, list, noisePred.dtype, noisePred.device);
            return ddim.Step(noisePred, t, latents, eta, varianceNoise: noise);
        }
        return ddim.Step(noisePred, t, latents, eta, generator: generator);
    }
}
