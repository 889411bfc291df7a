using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Training;

/// <summary>
/// What a <see cref="Trainer"/> optimizes: named trainable parameters and a loss that is a pure function of the step
/// index and the step's generator (data and noise are drawn from those), so a run resumed from a checkpoint repeats the
/// uninterrupted run.
/// </summary>
public interface ITrainingTask
{
    /// <summary>Short name of the stage ("vae", "transformer"), stored in checkpoints.</summary>
    string Stage { get; }

    /// <summary>The trained parameters, with names unique across the task's models (e.g. <c>transformer.proj_out.weight</c>).</summary>
    IReadOnlyList<(string Name, Parameter Param)> TrainableParameters { get; }

    /// <summary>Samples consumed per step (for the data position recorded in checkpoints).</summary>
    int BatchSize { get; }

    /// <summary>The loss of 0-based step <paramref name="step"/>; every random draw comes from <paramref name="generator"/> or the step index.</summary>
    Tensor ComputeLoss(long step, torch.Generator generator);

    /// <summary>A description of the models and data (configs, options) that a checkpoint must match to be resumed.</summary>
    JsonObject Describe();

    /// <summary>Switches the models to training or evaluation mode.</summary>
    void SetTraining(bool training);
}
