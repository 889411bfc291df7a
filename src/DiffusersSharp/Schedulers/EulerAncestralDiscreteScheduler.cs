using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// Ancestral sampling with Euler steps (diffusers' <c>EulerAncestralDiscreteScheduler</c>, k-diffusion's
/// <c>sample_euler_ancestral</c>): each step goes down to <c>sigma_down</c> and adds fresh noise of <c>sigma_up</c>,
/// drawn from the generator exactly as diffusers' <c>randn_tensor</c> (also at the last step, where sigma_up is 0).
/// </summary>
public sealed class EulerAncestralDiscreteScheduler : SigmaSchedulerBase
{
    /// <summary>Creates the scheduler from its config (call <see cref="SetTimesteps"/> next).</summary>
    /// <exception cref="ArgumentException">An unknown option.</exception>
    public EulerAncestralDiscreteScheduler(EulerAncestralDiscreteSchedulerConfig? config = null)
        : this(config ?? new EulerAncestralDiscreteSchedulerConfig(), 0) { }

    private EulerAncestralDiscreteScheduler(EulerAncestralDiscreteSchedulerConfig config, int _)
        : base(config, BetaSchedules.AlphasCumprod(config, config.RescaleBetasZeroSnr, zeroSnrLast: true, nameof(EulerAncestralDiscreteScheduler)))
    {
        Config = config;
        if (config.PredictionType == "sample")
            throw new NotSupportedException("EulerAncestralDiscreteScheduler does not implement prediction_type \"sample\" (diffusers does not either).");
        if (config.PredictionType is not ("epsilon" or "v_prediction"))
            throw new ArgumentException($"prediction_type \"{config.PredictionType}\" must be one of epsilon, v_prediction.", nameof(config));
        if (config.TimestepSpacing is not ("linspace" or "leading" or "trailing"))
            throw new ArgumentException($"timestep_spacing \"{config.TimestepSpacing}\" is not supported; use linspace, leading or trailing.", nameof(config));
        int t = config.NumTrainTimesteps;
        var lin = NumpyMath.Linspace(0, t - 1, t);
        var timesteps = new float[t];
        for (int i = 0; i < t; i++) timesteps[i] = (float)lin[t - 1 - i];
        TimestepArray = timesteps;
    }

    /// <summary>Reads <c>scheduler_config.json</c> from a scheduler folder or the file itself.</summary>
    public static EulerAncestralDiscreteScheduler FromPretrained(string folderOrFile) =>
        new(ConfigJson.Parse<EulerAncestralDiscreteSchedulerConfig>(SchedulerConfigText.Read(folderOrFile)));

    /// <summary>The config.</summary>
    public EulerAncestralDiscreteSchedulerConfig Config { get; }

    /// <inheritdoc/>
    public override string ClassName => nameof(EulerAncestralDiscreteScheduler);

    private protected override ScalarType TimestepDtype => ScalarType.Float32;

    private protected override string TimestepSpacing => Config.TimestepSpacing;

    /// <summary>diffusers' <c>set_timesteps</c>: spaced float32 timesteps, sigmas by np.interp, then 0.</summary>
    public override void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        CheckStepCount(numInferenceSteps);
        float[] ts = TimestepSpacings.Float32(Config.TimestepSpacing, Config.NumTrainTimesteps, numInferenceSteps, Config.StepsOffset);
        float[] train = TrainingSigmas(AlphasCumprod.ToArray());
        var sigmas = new float[ts.Length + 1];
        for (int i = 0; i < ts.Length; i++) sigmas[i] = (float)NumpyMath.Interp(ts[i], train);
        InstallSigmas(ts, sigmas, device);
        NumInferenceSteps = numInferenceSteps;
    }

    /// <summary>
    /// One ancestral step: the Euler step to <c>sigma_down</c> plus <c>noise * sigma_up</c>, the noise drawn with the
    /// model output's shape and dtype on its device from <paramref name="generator"/>. Returns the previous sample in
    /// the model output's dtype and advances <see cref="SigmaSchedulerBase.StepIndex"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException"><see cref="SetTimesteps"/> was not called, or all steps are done.</exception>
    /// <exception cref="ArgumentException">The timestep is not in the schedule.</exception>
    public override Tensor Step(Tensor modelOutput, float timestep, Tensor sample, Runtime.Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(sample);
        int i = CurrentStep(timestep);
        using var scope = NewDisposeScope();
        var sigma = Scalar(SigmaArray[i]);
        var x = sample.to(ScalarType.Float32);
        var predOriginal = Config.PredictionType == "epsilon"
            ? x - sigma * modelOutput
            : modelOutput * (-sigma / (sigma.pow(2) + 1).pow(0.5)) + x / (sigma.pow(2) + 1);

        var sigmaFrom = Scalar(SigmaArray[i]);
        var sigmaTo = Scalar(SigmaArray[i + 1]);
        var sigmaUp = (sigmaTo.pow(2) * (sigmaFrom.pow(2) - sigmaTo.pow(2)) / sigmaFrom.pow(2)).pow(0.5);
        var sigmaDown = (sigmaTo.pow(2) - sigmaUp.pow(2)).pow(0.5);
        var derivative = (x - predOriginal) / sigma;
        var dt = sigmaDown - sigma;
        var prev = x + derivative * dt;
        var noise = RandnLike(modelOutput.shape, modelOutput.dtype, modelOutput.device, generator);
        prev = (prev + noise * sigmaUp).to(modelOutput.dtype);
        StepIndex = i + 1;
        return prev.MoveToOuterDisposeScope();
    }
}
