using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Training;

/// <summary>Options of a <see cref="Trainer"/> run.</summary>
public sealed record TrainerOptions
{
    /// <summary>Total optimizer steps (a resumed run continues to this count).</summary>
    public long Steps { get; init; } = 1000;

    /// <summary>The AdamW hyper-parameters.</summary>
    public AdamWOptions Optimizer { get; init; } = new();

    /// <summary>Steps of linear learning-rate warm-up from 0.</summary>
    public int WarmupSteps { get; init; }

    /// <summary>The learning rate after warm-up: constant, or a cosine decay to <see cref="MinLearningRate"/> at <see cref="Steps"/>.</summary>
    public LearningRateSchedule Schedule { get; init; } = LearningRateSchedule.Constant;

    /// <summary>The learning rate a cosine schedule ends at.</summary>
    public double MinLearningRate { get; init; }

    /// <summary>Gradients are clipped to this global L2 norm (0 or less: no clipping).</summary>
    public double MaxGradNorm { get; init; } = 1.0;

    /// <summary>EMA decay of the trained weights.</summary>
    public double EmaDecay { get; init; } = 0.999;

    /// <summary>The seed: model initialisation (<c>torch.manual_seed</c>), data and noise all derive from it.</summary>
    public long Seed { get; init; }

    /// <summary>A checkpoint is written every this many steps (0: only when asked).</summary>
    public int CheckpointEvery { get; init; }

    /// <summary>Folder of the checkpoints (<c>step-000100</c>, ...); required when <see cref="CheckpointEvery"/> is set.</summary>
    public string? CheckpointDir { get; init; }

    /// <summary>How many of the latest checkpoints are kept (older ones are deleted); 0 keeps all.</summary>
    public int KeepCheckpoints { get; init; } = 2;

    /// <summary>Checks ranges; throws <see cref="ArgumentException"/> naming the bad option.</summary>
    public void Validate()
    {
        if (Steps < 1) throw new ArgumentException($"steps must be at least 1, got {Steps}.");
        if (WarmupSteps < 0) throw new ArgumentException($"warm-up steps must be >= 0, got {WarmupSteps}.");
        if (!(EmaDecay is >= 0 and < 1)) throw new ArgumentException($"EMA decay must be in [0, 1), got {EmaDecay}.");
        if (!(Optimizer.LearningRate > 0)) throw new ArgumentException($"learning rate must be positive, got {Optimizer.LearningRate}.");
        if (CheckpointEvery < 0) throw new ArgumentException($"checkpoint interval must be >= 0, got {CheckpointEvery}.");
        if (CheckpointEvery > 0 && string.IsNullOrEmpty(CheckpointDir)) throw new ArgumentException("checkpoints need a checkpoint folder.");
        if (KeepCheckpoints < 0) throw new ArgumentException($"keep-checkpoints must be >= 0, got {KeepCheckpoints}.");
        if (!(MinLearningRate >= 0 && MinLearningRate <= Optimizer.LearningRate))
            throw new ArgumentException($"the minimum learning rate must be in [0, {Optimizer.LearningRate}], got {MinLearningRate}.");
    }
}

/// <summary>How the learning rate moves after warm-up.</summary>
public enum LearningRateSchedule
{
    /// <summary>The peak rate until the end.</summary>
    Constant,

    /// <summary>Half a cosine from the peak rate (end of warm-up) to the minimum rate (last step).</summary>
    Cosine,
}

/// <summary>Progress after each optimizer step.</summary>
/// <param name="Stage">The task's stage.</param>
/// <param name="Step">Steps done.</param>
/// <param name="TotalSteps">Steps of the run.</param>
/// <param name="Loss">This step's loss.</param>
/// <param name="StepsPerSecond">Steps per second over this process's steps so far.</param>
/// <param name="LearningRate">The learning rate used by this step.</param>
/// <param name="Checkpoint">The checkpoint folder written after this step, if any.</param>
public sealed record TrainingProgress(string Stage, long Step, long TotalSteps, double Loss, double StepsPerSecond, double LearningRate, string? Checkpoint);

/// <summary>
/// The training loop: AdamW with warm-up and gradient clipping, an EMA of the weights, checkpoints every N steps,
/// resume. Step <c>n</c> draws everything from a CPU <c>torch.Generator</c> seeded from (seed, stage, n), so a run is
/// deterministic for a seed and a resumed run equals the straight one.
/// </summary>
public sealed class Trainer : IDisposable
{
    private const string StateFile = "trainer_state.json";
    private readonly ITrainingTask _task;
    private readonly AdamW _optimizer;
    private readonly ExponentialMovingAverage _ema;

    /// <summary>Creates the optimizer and EMA over the task's parameters (as they are now).</summary>
    public Trainer(ITrainingTask task, TrainerOptions options)
    {
        ArgumentNullException.ThrowIfNull(task);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _task = task;
        Options = options;
        if (task.TrainableParameters.Count == 0) throw new ArgumentException($"the {task.Stage} task has no trainable parameters.");
        _optimizer = new AdamW(task.TrainableParameters, options.Optimizer);
        _ema = new ExponentialMovingAverage(task.TrainableParameters, options.EmaDecay);
    }

    /// <summary>The options.</summary>
    public TrainerOptions Options { get; }

    /// <summary>Steps done.</summary>
    public long Step { get; private set; }

    /// <summary>The loss of the last step (NaN before the first).</summary>
    public double LastLoss { get; private set; } = double.NaN;

    /// <summary>The EMA weights by parameter name.</summary>
    public IReadOnlyDictionary<string, Tensor> EmaWeights => _ema.Weights();

    /// <summary>The seed of step <paramref name="step"/>'s generator: SplitMix64 of (seed, stage, step).</summary>
    public static ulong StepSeed(long seed, string stage, long step)
    {
        ulong h = 1469598103934665603UL;
        foreach (char c in stage) h = (h ^ c) * 1099511628211UL;
        return Mix(Mix((ulong)seed ^ h) ^ (ulong)step);
    }

    private static ulong Mix(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Learning rate of 0-based step <paramref name="step"/> (linear warm-up, then the schedule).</summary>
    public double LearningRateAt(long step)
    {
        double peak = Options.Optimizer.LearningRate;
        if (step < Options.WarmupSteps) return peak * (step + 1.0) / Options.WarmupSteps;
        if (Options.Schedule == LearningRateSchedule.Constant) return peak;
        double span = Math.Max(1, Options.Steps - 1 - Options.WarmupSteps);
        double progress = Math.Clamp((step - Options.WarmupSteps) / span, 0, 1);
        return Options.MinLearningRate + (peak - Options.MinLearningRate) * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }

    /// <summary>Trains until <see cref="TrainerOptions.Steps"/>; returns the number of steps run by this call.</summary>
    public long Train(IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var clock = Stopwatch.StartNew();
        long first = Step;
        var parameters = _task.TrainableParameters.Select(p => p.Param).ToArray();
        _task.SetTraining(true);
        try
        {
            while (Step < Options.Steps)
            {
                cancellationToken.ThrowIfCancellationRequested();
                double lr = LearningRateAt(Step);
                using (var scope = NewDisposeScope())
                using (var generator = new torch.Generator(StepSeed(Options.Seed, _task.Stage, Step)))
                {
                    _optimizer.ZeroGrad();
                    var loss = _task.ComputeLoss(Step, generator);
                    LastLoss = loss.item<float>();
                    if (!double.IsFinite(LastLoss))
                        throw new InvalidOperationException($"{_task.Stage} step {Step + 1}: the loss is {LastLoss}; lower the learning rate.");
                    loss.backward();
                    if (Options.MaxGradNorm > 0) nn.utils.clip_grad_norm_(parameters, Options.MaxGradNorm);
                    _optimizer.LearningRate = lr;
                    _optimizer.Step();
                    _optimizer.ZeroGrad();
                }
                Step++;
                _ema.Update(Step);
                string? checkpoint = null;
                if (Options.CheckpointEvery > 0 && (Step % Options.CheckpointEvery == 0 || Step == Options.Steps))
                    checkpoint = SaveCheckpoint(Options.CheckpointDir!);
                progress?.Report(new TrainingProgress(_task.Stage, Step, Options.Steps, LastLoss,
                    (Step - first) / Math.Max(clock.Elapsed.TotalSeconds, 1e-9), lr, checkpoint));
            }
        }
        finally
        {
            _task.SetTraining(false);
        }
        return Step - first;
    }

    /// <summary>Copies the EMA weights into the models (do this before saving the final model).</summary>
    public void CopyEmaToModels()
    {
        var ema = _ema.Weights();
        using var noGrad = no_grad();
        foreach (var (name, p) in _task.TrainableParameters) p.copy_(ema[name]);
    }

    /// <summary>
    /// Writes a checkpoint folder <c>step-NNNNNN</c> under <paramref name="root"/> (built under a temporary name and
    /// renamed, so a folder that exists is complete): weights, EMA weights, optimizer moments (safetensors, float32) and
    /// <c>trainer_state.json</c> (step, seed, data position, the task description). Returns its path.
    /// </summary>
    public string SaveCheckpoint(string root)
    {
        ArgumentException.ThrowIfNullOrEmpty(root);
        Directory.CreateDirectory(root);
        string name = string.Create(CultureInfo.InvariantCulture, $"step-{Step:D6}");
        string final = Path.Combine(root, name);
        string tmp = Path.Combine(root, $".{name}.{Guid.NewGuid():N}.tmp");
        Directory.CreateDirectory(tmp);
        try
        {
            SafetensorsWriter.Save(Path.Combine(tmp, "weights.safetensors"),
                _task.TrainableParameters.ToDictionary(p => p.Name, p => (Tensor)p.Param, StringComparer.Ordinal));
            SafetensorsWriter.Save(Path.Combine(tmp, "ema.safetensors"), _ema.Weights());
            SafetensorsWriter.Save(Path.Combine(tmp, "optimizer.safetensors"), _optimizer.StateTensors());
            var state = new JsonObject
            {
                ["stage"] = _task.Stage,
                ["step"] = Step,
                ["seed"] = Options.Seed,
                ["batch_size"] = _task.BatchSize,
                ["data_position"] = Step * _task.BatchSize,
                ["optimizer_step"] = _optimizer.StepCount,
                ["last_loss"] = double.IsFinite(LastLoss) ? LastLoss : null,
                ["task"] = _task.Describe(),
            };
            AtomicFile.WriteAllBytes(Path.Combine(tmp, StateFile), JsonSerializer.SerializeToUtf8Bytes(state, ConfigJson.Options));
            if (Directory.Exists(final)) Directory.Delete(final, recursive: true);
            Directory.Move(tmp, final);
        }
        catch
        {
            try { Directory.Delete(tmp, recursive: true); } catch (IOException) { }
            throw;
        }
        Prune(root);
        return final;
    }

    /// <summary>
    /// The checkpoint to resume from: <paramref name="path"/> itself when it holds <c>trainer_state.json</c>, else its
    /// <c>step-*</c> subfolder with the most steps.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">No checkpoint there.</exception>
    public static string FindCheckpoint(string path)
    {
        if (File.Exists(Path.Combine(path, StateFile))) return path;
        var latest = Directory.Exists(path)
            ? Directory.GetDirectories(path, "step-*").Where(d => File.Exists(Path.Combine(d, StateFile))).Order(StringComparer.Ordinal).LastOrDefault()
            : null;
        return latest ?? throw new DirectoryNotFoundException($"No training checkpoint (a folder with {StateFile}) at {path}.");
    }

    /// <summary>Restores weights, EMA, optimizer and step from a checkpoint of the same task, seed and batch size.</summary>
    /// <exception cref="InvalidDataException">The checkpoint belongs to another stage, seed, batch size or model.</exception>
    public void Resume(string checkpoint)
    {
        string dir = FindCheckpoint(checkpoint);
        var state = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, StateFile)))?.AsObject()
            ?? throw new InvalidDataException($"{dir}/{StateFile} is empty.");
        void Same(string key, JsonNode? expected)
        {
            if (!JsonNode.DeepEquals(state[key], expected))
                throw new InvalidDataException($"{dir}: the checkpoint's {key} is {state[key]?.ToJsonString() ?? "null"}, this run's is {expected?.ToJsonString() ?? "null"}; resume with the same settings.");
        }
        Same("stage", _task.Stage);
        Same("seed", Options.Seed);
        Same("batch_size", _task.BatchSize);
        Same("task", _task.Describe());
        long step = state["step"]!.GetValue<long>();
        if (step > Options.Steps) throw new InvalidDataException($"{dir}: the checkpoint is at step {step}, past the {Options.Steps} steps asked for.");
        using (var weights = SafetensorsFile.Open(Path.Combine(dir, "weights.safetensors")))
        using (var noGrad = no_grad())
            foreach (var (name, p) in _task.TrainableParameters)
            {
                if (!weights.Tensors.ContainsKey(name)) throw new InvalidDataException($"{dir}: weights have no '{name}'.");
                using var t = weights.Read(name);
                if (!t.shape.SequenceEqual(p.shape)) throw new InvalidDataException($"{dir}: weight '{name}' has another shape.");
                p.copy_(t);
            }
        _ema.Load(ReadAll(Path.Combine(dir, "ema.safetensors")));
        _optimizer.LoadState(ReadAll(Path.Combine(dir, "optimizer.safetensors")), state["optimizer_step"]!.GetValue<long>());
        Step = step;
        LastLoss = state["last_loss"]?.GetValue<double>() ?? double.NaN;
    }

    private static Dictionary<string, Tensor> ReadAll(string path)
    {
        using var file = SafetensorsFile.Open(path);
        return file.Tensors.Keys.ToDictionary(k => k, k => file.Read(k).clone(), StringComparer.Ordinal);
    }

    private void Prune(string root)
    {
        if (Options.KeepCheckpoints <= 0) return;
        var all = Directory.GetDirectories(root, "step-*").Order(StringComparer.Ordinal).ToList();
        foreach (var old in all.Take(Math.Max(0, all.Count - Options.KeepCheckpoints)))
            Directory.Delete(old, recursive: true);
    }

    /// <summary>Frees the optimizer state and the EMA weights.</summary>
    public void Dispose()
    {
        _optimizer.Dispose();
        _ema.Dispose();
    }
}
