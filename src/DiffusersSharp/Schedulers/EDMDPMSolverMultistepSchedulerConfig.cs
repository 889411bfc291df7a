namespace DiffusersSharp.Schedulers;

/// <summary><c>scheduler_config.json</c> of an <c>EDMDPMSolverMultistepScheduler</c> (Playground v2.5); defaults are the
/// Python constructor defaults.</summary>
public sealed record EDMDPMSolverMultistepSchedulerConfig : EDMSchedulerConfigBase
{
    /// <summary>Solver order, 1 to 3 (2: DPM-Solver++(2M)).</summary>
    public int SolverOrder { get; init; } = 2;

    /// <summary>Dynamic thresholding of the predicted x0 (Imagen's; unsuitable for latent models).</summary>
    public bool Thresholding { get; init; }

    /// <summary>The quantile of |x0| that dynamic thresholding clamps to.</summary>
    public double DynamicThresholdingRatio { get; init; } = 0.995;

    /// <summary>The ceiling of the dynamic threshold.</summary>
    public double SampleMaxValue { get; init; } = 1.0;

    /// <summary><c>dpmsolver++</c> or <c>sde-dpmsolver++</c> (<c>deis</c> is taken as <c>dpmsolver++</c>, as diffusers does).</summary>
    public string AlgorithmType { get; init; } = "dpmsolver++";

    /// <summary>Second-order update: <c>midpoint</c> or <c>heun</c> (<c>logrho</c> / <c>bh1</c> / <c>bh2</c> are taken as midpoint).</summary>
    public string SolverType { get; init; } = "midpoint";

    /// <summary>Lower the order on the last steps when there are fewer than 15.</summary>
    public bool LowerOrderFinal { get; init; } = true;

    /// <summary>A first-order (Euler) last step.</summary>
    public bool EulerAtFinal { get; init; }
}
