using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// A scheduler whose step takes DDIM's <c>eta</c> (the weight of fresh noise in each step, η in the DDIM paper). The
/// pipelines pass a request's eta only to such a scheduler, as diffusers' <c>prepare_extra_step_kwargs</c> passes
/// <c>eta</c> only to a <c>step</c> whose signature has it; every other scheduler ignores it.
/// </summary>
public interface IEtaStepScheduler : IDiffusionScheduler
{
    /// <summary>
    /// One step from <paramref name="timestep"/> with stochasticity <paramref name="eta"/> (0: deterministic). With
    /// <paramref name="eta"/> &gt; 0 the noise is <paramref name="varianceNoise"/> when given, else drawn from
    /// <paramref name="generator"/> with the model output's shape and dtype (diffusers' <c>variance_noise</c> /
    /// <c>generator</c>; giving both is an error).
    /// </summary>
    Tensor Step(Tensor modelOutput, float timestep, Tensor sample, double eta, bool useClippedModelOutput = false,
        Runtime.Generator? generator = null, Tensor? varianceNoise = null);
}
