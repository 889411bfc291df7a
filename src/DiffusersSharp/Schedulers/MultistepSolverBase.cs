using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// What diffusers' data-prediction multistep solvers (DPM-Solver++, UniPC, DEIS) share: int64 timesteps, an unscaled
/// model input (<c>init_noise_sigma</c> 1), a missing timestep taken as the last step, alpha_t / sigma_t from sigma and
/// the <c>alpha_t * x0 + sigma_t * noise</c> forward process.
/// </summary>
public abstract class MultistepSolverBase : SigmaSchedulerBase
{
    private protected MultistepSolverBase(BetaScheduleConfig config, float[] alphasCumprod) : base(config, alphasCumprod)
    {
        // __init__: sigmas are the training sigmas in ascending t (no final 0) and the timesteps T-1 .. 0.
        SigmaArray = TrainingSigmas(alphasCumprod);
        int t = config.NumTrainTimesteps;
        var lin = NumpyMath.Linspace(0, t - 1, t);
        var timesteps = new float[t];
        for (int i = 0; i < t; i++) timesteps[i] = (float)lin[t - 1 - i];
        TimestepArray = timesteps;
    }

    /// <summary>1.0: the model input is not scaled.</summary>
    public override double InitNoiseSigma => 1.0;

    private protected override ScalarType TimestepDtype => ScalarType.Int64;

    private protected override int? IndexWhenMissing => TimestepArray.Length - 1;

    /// <summary>
    /// The checks every solver's constructor makes on the shared fields: one sigma spacing at most, order 1 to 3, a known
    /// prediction type, no thresholding / dynamic shifting (not implemented here), and flow sigmas only where
    /// <paramref name="flowSigmasImplemented"/> (DPM-Solver++ multistep, as Sana runs it).
    /// </summary>
    private protected static void CheckSolverConfig(MultistepSolverConfig config, string scheduler, bool flowSigmasImplemented = false)
    {
        if ((config.UseKarrasSigmas ? 1 : 0) + (config.UseExponentialSigmas ? 1 : 0) + (config.UseBetaSigmas ? 1 : 0) > 1)
            throw new ArgumentException("Only one of use_beta_sigmas, use_exponential_sigmas, use_karras_sigmas can be used.", nameof(config));
        if (config.SolverOrder is < 1 or > 3)
            throw new ArgumentException($"solver_order must be 1, 2 or 3, got {config.SolverOrder}.", nameof(config));
        if (config.PredictionType is not ("epsilon" or "sample" or "v_prediction" or "flow_prediction"))
            throw new ArgumentException($"prediction_type \"{config.PredictionType}\" must be one of epsilon, sample, v_prediction, flow_prediction.", nameof(config));
        if (config.Thresholding)
            throw new NotSupportedException($"{scheduler}: thresholding is not implemented in DiffusersSharp; set thresholding to false.");
        if (config.UseDynamicShifting)
            throw new NotSupportedException($"{scheduler}: use_dynamic_shifting is not implemented in DiffusersSharp.");
        if (config.UseFlowSigmas && !flowSigmasImplemented)
            throw new NotSupportedException($"{scheduler}: use_flow_sigmas is not implemented in DiffusersSharp for this scheduler (DPMSolverMultistepScheduler has it).");
        if (config.UseFlowSigmas && (config.UseKarrasSigmas || config.UseExponentialSigmas || config.UseBetaSigmas))
            throw new ArgumentException($"{scheduler}: use_flow_sigmas cannot be combined with Karras / exponential / beta sigmas (diffusers would silently ignore the flow sigmas).", nameof(config));
        if (config.UseFlowSigmas && !(config.FlowShift > 0))
            throw new ArgumentException($"{scheduler}: flow_shift must be positive, got {config.FlowShift}.", nameof(config));
    }

    /// <summary>Whether the schedule is a flow-matching one (<c>use_flow_sigmas</c>): sigma is then the noise fraction
    /// and alpha_t = 1 - sigma, sigma_t = sigma.</summary>
    private protected bool FlowSigmas { get; init; }

    /// <summary>
    /// The DPM-Solver++ algorithm and second-order update diffusers runs for a config's <c>algorithm_type</c> /
    /// <c>solver_type</c> (<c>deis</c> runs as <c>dpmsolver++</c>; <c>logrho</c>, <c>bh1</c>, <c>bh2</c> as <c>midpoint</c>),
    /// shared by the DPM-Solver++ schedulers; only dpmsolver++ / sde-dpmsolver++ with midpoint / heun are implemented.
    /// <paramref name="hasDeprecatedForms"/>: the diffusers class also runs the deprecated dpmsolver / sde-dpmsolver
    /// (DPMSolverMultistepScheduler does, its EDM twin does not).
    /// </summary>
    /// <exception cref="ArgumentException">Another algorithm or solver type.</exception>
    /// <exception cref="NotSupportedException">The deprecated dpmsolver / sde-dpmsolver, where diffusers runs them.</exception>
    internal static (string Algorithm, string SolverType) DpmSolverPlusPlusVariant(string algorithmType, string solverType, string scheduler,
        bool hasDeprecatedForms)
    {
        string algorithm = algorithmType == "deis" ? "dpmsolver++" : algorithmType;
        if (hasDeprecatedForms && algorithm is "dpmsolver" or "sde-dpmsolver")
            throw new NotSupportedException($"{scheduler}: algorithm_type \"{algorithm}\" (deprecated in diffusers) is not implemented; use dpmsolver++ or sde-dpmsolver++.");
        if (algorithm is not ("dpmsolver++" or "sde-dpmsolver++"))
            throw new ArgumentException($"{scheduler}: algorithm_type \"{algorithmType}\" is not implemented; use dpmsolver++ or sde-dpmsolver++.", "config");
        string solver = solverType is "logrho" or "bh1" or "bh2" ? "midpoint" : solverType;
        if (solver is not ("midpoint" or "heun"))
            throw new ArgumentException($"{scheduler}: solver_type \"{solverType}\" is not implemented; use midpoint or heun.", "config");
        return (algorithm, solver);
    }

    /// <summary><c>_sigma_to_alpha_sigma_t</c>: alpha = 1 / sqrt(sigma² + 1), sigma_t = sigma * alpha; with flow sigmas
    /// alpha = 1 - sigma, sigma_t = sigma.</summary>
    private protected (Tensor Alpha, Tensor Sigma) AlphaSigma(Tensor sigma)
    {
        if (FlowSigmas) return (1 - sigma, sigma.alias());
        var alpha = 1 / (sigma.pow(2) + 1).pow(0.5);
        return (alpha, sigma * alpha);
    }

    /// <summary>log-SNR: <c>log(alpha_t) - log(sigma_t)</c>.</summary>
    private protected static Tensor Lambda(Tensor alpha, Tensor sigma) => alpha.log() - sigma.log();

    /// <summary>
    /// <c>convert_model_output</c> to a data (x0) prediction, as DPM-Solver++ and UniPC (predict_x0) take it, at sigma
    /// index <paramref name="i"/>; "flow_prediction" is <c>sample - sigma * output</c>. With a learned variance (epsilon
    /// only) the predicted variance channels are dropped first: the first 3 channels are kept, as diffusers keeps them.
    /// </summary>
    private protected Tensor DataPrediction(Tensor modelOutput, Tensor sample, int i, string predictionType, bool learnedVariance = false)
    {
        var sigma = Scalar(SigmaArray[i]);
        if (learnedVariance && predictionType == "epsilon") modelOutput = modelOutput.narrow(1, 0, 3);
        var (alpha, sigmaT) = AlphaSigma(sigma);
        return predictionType switch
        {
            "epsilon" => (sample - sigmaT * modelOutput) / alpha,
            "sample" => modelOutput.alias(),
            "v_prediction" => alpha * sample - sigmaT * modelOutput,
            _ => sample - sigma * modelOutput,
        };
    }

    /// <summary>
    /// DPM-Solver++'s first-order update (<c>dpm_solver_first_order_update</c>, DDIM's equivalent): from
    /// <paramref name="sample"/> at <paramref name="sigmaS"/> to <paramref name="sigmaT"/> over the log-SNR step
    /// <paramref name="h"/> with the data prediction <paramref name="m"/>; with <paramref name="noise"/> the SDE variant.
    /// </summary>
    internal static Tensor DpmSolverPlusPlusFirstOrder(Tensor sample, Tensor? noise, Tensor alphaT, Tensor sigmaT, Tensor sigmaS, Tensor h, Tensor m)
    {
        if (noise is null)
            return (sigmaT / sigmaS) * sample - (alphaT * ((-h).exp() - 1.0)) * m;
        return (sigmaT / sigmaS * (-h).exp()) * sample
            + (alphaT * (1 - (-2.0 * h).exp())) * m
            + sigmaT * (1.0 - (-2 * h).exp()).sqrt() * noise;
    }

    /// <summary>
    /// DPM-Solver++'s third-order multistep update (<c>multistep_dpm_solver_third_order_update</c>, the ODE form) from the
    /// differences <paramref name="d0"/>, <paramref name="d1"/>, <paramref name="d2"/> of the data predictions.
    /// </summary>
    internal static Tensor DpmSolverPlusPlusThirdOrder(Tensor sample, Tensor alphaT, Tensor sigmaT, Tensor sigmaS0, Tensor h,
        Tensor d0, Tensor d1, Tensor d2) =>
        (sigmaT / sigmaS0) * sample
            - (alphaT * ((-h).exp() - 1.0)) * d0
            + (alphaT * (((-h).exp() - 1.0) / h + 1.0)) * d1
            - (alphaT * (((-h).exp() - 1.0 + h) / h.pow(2) - 0.5)) * d2;

    /// <summary>
    /// DPM-Solver++'s second-order update (<c>multistep_dpm_solver_second_order_update</c> and the singlestep twin, which
    /// differ only in which sigma the sample sits at and which output is <paramref name="d0"/>): from
    /// <paramref name="sample"/> at <paramref name="sigmaS"/> to <paramref name="sigmaT"/> over the log-SNR step
    /// <paramref name="h"/>; with <paramref name="noise"/> the SDE variant (sde-dpmsolver++). Midpoint or heun terms.
    /// </summary>
    internal static Tensor DpmSolverPlusPlusSecondOrder(Tensor sample, Tensor? noise, string solverType, Tensor alphaT, Tensor sigmaT,
        Tensor sigmaS, Tensor h, Tensor d0, Tensor d1)
    {
        if (noise is null)
        {
            if (solverType == "midpoint")
                return (sigmaT / sigmaS) * sample
                    - (alphaT * ((-h).exp() - 1.0)) * d0
                    - 0.5 * (alphaT * ((-h).exp() - 1.0)) * d1;
            return (sigmaT / sigmaS) * sample
                - (alphaT * ((-h).exp() - 1.0)) * d0
                + (alphaT * (((-h).exp() - 1.0) / h + 1.0)) * d1;
        }
        if (solverType == "midpoint")
            return (sigmaT / sigmaS * (-h).exp()) * sample
                + (alphaT * (1 - (-2.0 * h).exp())) * d0
                + 0.5 * (alphaT * (1 - (-2.0 * h).exp())) * d1
                + sigmaT * (1.0 - (-2 * h).exp()).sqrt() * noise;
        return (sigmaT / sigmaS * (-h).exp()) * sample
            + (alphaT * (1 - (-2.0 * h).exp())) * d0
            + (alphaT * ((1.0 - (-2.0 * h).exp()) / (-2.0 * h) + 1.0)) * d1
            + sigmaT * (1.0 - (-2 * h).exp()).sqrt() * noise;
    }

    /// <summary>The identity: these solvers take the unscaled sample.</summary>
    public override Tensor ScaleModelInput(Tensor sample, float timestep)
    {
        ArgumentNullException.ThrowIfNull(sample);
        return sample.alias();
    }

    /// <summary><c>alpha_t * x0 + sigma_t * noise</c> with alpha_t, sigma_t from sigma in the sample's dtype.</summary>
    private protected override Tensor NoiseAt(Tensor originalSamples, Tensor noise, Tensor sigma)
    {
        var (alpha, sigmaT) = AlphaSigma(sigma);
        return alpha * originalSamples + sigmaT * noise;
    }
}
