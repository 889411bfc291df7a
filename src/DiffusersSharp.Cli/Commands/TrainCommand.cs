using System.ComponentModel;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using DiffusersSharp.Runtime;
using DiffusersSharp.Training;
using Spectre.Console;
using Spectre.Console.Cli;

namespace DiffusersSharp.Cli.Commands;

/// <summary>
/// <c>diffusers train --output DIR</c>: trains the shapes model (VAE, then transformer + CLIP encoders) on scenes drawn
/// on the fly and writes a diffusers pipeline folder; progress on stderr, a JSON summary on stdout.
/// </summary>
public sealed class TrainCommand(CliOutput cli) : Command<TrainCommand.Settings>
{
    /// <summary>Options of <c>train</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        /// <summary>Pipeline folder to write.</summary>
        [CommandOption("--output <DIR>"), Description("Pipeline folder to write (the VAE stage writes DIR/vae, the transformer stage the rest).")]
        public string Output { get; init; } = "";

        /// <summary>Stage.</summary>
        [CommandOption("--stage <STAGE>"), Description("vae, transformer or all (default all: VAE first)."), DefaultValue("all")]
        public string Stage { get; init; } = "all";

        /// <summary>Transformer steps.</summary>
        [CommandOption("--steps <N>"), Description("Transformer optimizer steps (default 6000)."), DefaultValue(6000L)]
        public long Steps { get; init; } = 6000;

        /// <summary>Transformer batch size.</summary>
        [CommandOption("--batch-size <B>"), Description("Scenes per transformer step (default 16)."), DefaultValue(16)]
        public int BatchSize { get; init; } = 16;

        /// <summary>Transformer learning rate.</summary>
        [CommandOption("--lr <X>"), Description("Transformer learning rate (default 5e-4)."), DefaultValue("5e-4")]
        public string LearningRate { get; init; } = "5e-4";

        /// <summary>Transformer learning-rate schedule.</summary>
        [CommandOption("--lr-schedule <NAME>"), Description("Transformer learning rate after warm-up: constant (default) or cosine (decays to --min-lr at the last step)."), DefaultValue("constant")]
        public string LearningRateSchedule { get; init; } = "constant";

        /// <summary>Final learning rate of the cosine schedule.</summary>
        [CommandOption("--min-lr <X>"), Description("Learning rate the cosine schedule ends at (default 0)."), DefaultValue("0")]
        public string MinLearningRate { get; init; } = "0";

        /// <summary>Fine-tuning source.</summary>
        [CommandOption("--init-from <DIR>"), Description("Start the transformer stage from the transformer and CLIP weights of this pipeline folder (same sizes) instead of a random initialisation.")]
        public string? InitFrom { get; init; }

        /// <summary>Scheduler shift.</summary>
        [CommandOption("--shift <X>"), Description("The scheduler's shift, for training noise levels and the written model (default 1: these 128-pixel images need no shift toward noise; SD3 uses 3 at 1024 pixels)."), DefaultValue("1")]
        public string Shift { get; init; } = "1";

        /// <summary>Timestep density and loss weight.</summary>
        [CommandOption("--weighting-scheme <NAME>"), Description("Timestep density / loss weight, as diffusers' SD3 training scripts: logit_normal (default, SD3's), mode, sigma_sqrt, cosmap or none."), DefaultValue("logit_normal")]
        public string WeightingScheme { get; init; } = "logit_normal";

        /// <summary>Logit-normal mean.</summary>
        [CommandOption("--logit-mean <X>"), Description("Mean of the logit-normal timestep density (default 0; negative favours low noise)."), DefaultValue("0")]
        public string LogitMean { get; init; } = "0";

        /// <summary>Logit-normal standard deviation.</summary>
        [CommandOption("--logit-std <X>"), Description("Standard deviation of the logit-normal timestep density (default 1)."), DefaultValue("1")]
        public string LogitStd { get; init; } = "1";

        /// <summary>Mode-density scale.</summary>
        [CommandOption("--mode-scale <X>"), Description("Scale of the mode timestep density (default 1.29)."), DefaultValue("1.29")]
        public string ModeScale { get; init; } = "1.29";

        /// <summary>VAE steps.</summary>
        [CommandOption("--vae-steps <N>"), Description("VAE optimizer steps (default 1500)."), DefaultValue(1500L)]
        public long VaeSteps { get; init; } = 1500;

        /// <summary>VAE batch size.</summary>
        [CommandOption("--vae-batch-size <B>"), Description("Scenes per VAE step (default 16)."), DefaultValue(16)]
        public int VaeBatchSize { get; init; } = 16;

        /// <summary>VAE learning rate.</summary>
        [CommandOption("--vae-lr <X>"), Description("VAE learning rate (default 1e-3)."), DefaultValue("1e-3")]
        public string VaeLearningRate { get; init; } = "1e-3";

        /// <summary>VAE crop.</summary>
        [CommandOption("--vae-crop <PX>"), Description("Train the VAE on random square crops of this side (0: whole 128-pixel scenes)."), DefaultValue(64)]
        public int VaeCrop { get; init; } = 64;

        /// <summary>Seed.</summary>
        [CommandOption("--seed <S>"), Description("Seed of initialisation, data and noise (default 0)."), DefaultValue(0L)]
        public long Seed { get; init; }

        /// <summary>Device.</summary>
        [CommandOption("--device <DEVICE>"), Description("cpu, cuda or cuda:N."), DefaultValue("cpu")]
        public string Device { get; init; } = "cpu";

        /// <summary>Resume.</summary>
        [CommandOption("--resume <CHECKPOINT>"), Description("Checkpoint folder (or a folder of step-* checkpoints: the latest) of the stage being run; needs --stage vae or transformer.")]
        public string? Resume { get; init; }

        /// <summary>Checkpoint interval.</summary>
        [CommandOption("--checkpoint-every <N>"), Description("Write a checkpoint every N steps (default 100; 0: none)."), DefaultValue(100)]
        public int CheckpointEvery { get; init; } = 100;

        /// <summary>Checkpoint folder.</summary>
        [CommandOption("--checkpoint-dir <DIR>"), Description("Checkpoint folder (default DIR-checkpoints next to --output); one subfolder per stage.")]
        public string? CheckpointDir { get; init; }

        /// <summary>EMA decay.</summary>
        [CommandOption("--ema-decay <D>"), Description("EMA decay of the weights (default 0.999, with warm-up)."), DefaultValue("0.999")]
        public string EmaDecay { get; init; } = "0.999";

        /// <summary>Warm-up.</summary>
        [CommandOption("--warmup <N>"), Description("Transformer linear learning-rate warm-up steps (default 100)."), DefaultValue(100)]
        public int Warmup { get; init; } = 100;

        /// <summary>VAE warm-up.</summary>
        [CommandOption("--vae-warmup <N>"), Description("VAE linear learning-rate warm-up steps (default 50)."), DefaultValue(50)]
        public int VaeWarmup { get; init; } = 50;

        /// <summary>Caption dropout.</summary>
        [CommandOption("--caption-dropout <P>"), Description("Probability of training on the empty caption (default 0.1; guidance needs it)."), DefaultValue("0.1")]
        public string CaptionDropout { get; init; } = "0.1";

        /// <summary>Frozen CLIPs.</summary>
        [CommandOption("--freeze-text-encoders"), Description("Keep the CLIP encoders at their random initialisation.")]
        public bool FreezeTextEncoders { get; init; }

        /// <summary>Model size.</summary>
        [CommandOption("--preset <NAME>"), Description("Model size: default (the shipped model) or tiny (tests)."), DefaultValue("default")]
        public string Preset { get; init; } = "default";

        /// <summary>Tokenizer source.</summary>
        [CommandOption("--tokenizers <DIR>"), Description("A pipeline folder whose tokenizer/ and tokenizer_2/ (real CLIP vocabulary) are copied (default: models/shapes-sd3 or the test fixture of the repository).")]
        public string? Tokenizers { get; init; }

        /// <summary>Progress interval.</summary>
        [CommandOption("--log-every <N>"), Description("Progress line every N steps (default 10)."), DefaultValue(10)]
        public int LogEvery { get; init; } = 10;

        internal FlowMatchingOptions Objective() =>
            FlowMatchingOptions.FromWeightingScheme(WeightingScheme, Parse(LogitMean, "--logit-mean"), Parse(LogitStd, "--logit-std"), Parse(ModeScale, "--mode-scale"));

        internal double Parse(string value, string option) =>
            double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v)
                ? v : throw new ArgumentException($"{option} must be a number, got '{value}'.");

        /// <inheritdoc />
        public override ValidationResult Validate()
        {
            if (string.IsNullOrWhiteSpace(Output)) return ValidationResult.Error("--output is required.");
            if (Stage is not ("vae" or "transformer" or "all")) return ValidationResult.Error($"--stage must be vae, transformer or all, got '{Stage}'.");
            if (Resume is not null && Stage == "all") return ValidationResult.Error("--resume needs --stage vae or --stage transformer (a checkpoint belongs to one stage).");
            if (Steps < 1 || VaeSteps < 1) return ValidationResult.Error("--steps and --vae-steps must be at least 1.");
            if (BatchSize < 1 || VaeBatchSize < 1) return ValidationResult.Error("--batch-size and --vae-batch-size must be at least 1.");
            if (CheckpointEvery < 0 || Warmup < 0 || VaeWarmup < 0 || LogEvery < 1) return ValidationResult.Error("--checkpoint-every, --warmup and --vae-warmup must be >= 0, --log-every >= 1.");
            if (LearningRateSchedule is not ("constant" or "cosine")) return ValidationResult.Error($"--lr-schedule must be constant or cosine, got '{LearningRateSchedule}'.");
            if (Preset is not ("default" or "tiny")) return ValidationResult.Error($"--preset must be default or tiny, got '{Preset}'.");
            try
            {
                foreach (var (v, o) in new[] { (LearningRate, "--lr"), (MinLearningRate, "--min-lr"), (Shift, "--shift"), (VaeLearningRate, "--vae-lr"), (EmaDecay, "--ema-decay"), (CaptionDropout, "--caption-dropout"), (LogitMean, "--logit-mean"), (LogitStd, "--logit-std"), (ModeScale, "--mode-scale") }) Parse(v, o);
                Objective();
            }
            catch (ArgumentException e) { return ValidationResult.Error(e.Message); }
            if (Parse(LearningRate, "--lr") <= 0 || Parse(VaeLearningRate, "--vae-lr") <= 0) return ValidationResult.Error("learning rates must be positive.");
            if (Parse(MinLearningRate, "--min-lr") is var min && (min < 0 || min > Parse(LearningRate, "--lr"))) return ValidationResult.Error("--min-lr must be in [0, --lr].");
            if (!(Parse(Shift, "--shift") > 0)) return ValidationResult.Error("--shift must be positive.");
            if (InitFrom is not null && !Directory.Exists(Path.Combine(InitFrom, "transformer"))) return ValidationResult.Error($"--init-from {InitFrom} has no transformer/ folder.");
            if (InitFrom is not null && Resume is not null) return ValidationResult.Error("--init-from starts a new run; --resume continues one: use one of them.");
            if (Parse(EmaDecay, "--ema-decay") is < 0 or >= 1) return ValidationResult.Error("--ema-decay must be in [0, 1).");
            if (Parse(CaptionDropout, "--caption-dropout") is < 0 or > 1) return ValidationResult.Error("--caption-dropout must be in [0, 1].");
            return ValidationResult.Success();
        }
    }

    /// <inheritdoc />
    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var device = TorchDevices.Parse(settings.Device);
        var preset = settings.Preset == "tiny" ? ShapesModelConfigs.Tiny : ShapesModelConfigs.Default;
        var configs = preset with { Scheduler = preset.Scheduler with { Shift = settings.Parse(settings.Shift, "--shift") } };
        int imageSize = configs.Transformer.SampleSize * configs.Vae.VaeScaleFactor;
        string output = Path.GetFullPath(settings.Output);
        string checkpoints = settings.CheckpointDir ?? output.TrimEnd(Path.DirectorySeparatorChar) + "-checkpoints";
        double ema = settings.Parse(settings.EmaDecay, "--ema-decay");
        var results = new JsonArray();
        var progress = new SyncProgress(p =>
        {
            if (p.Step % settings.LogEvery == 0 || p.Step == p.TotalSteps || p.Checkpoint is not null)
                cli.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{p.Stage} step {p.Step}/{p.TotalSteps} loss {p.Loss:0.00000} {p.StepsPerSecond:0.000} it/s lr {p.LearningRate:0.###e+0}")
                    + (p.Checkpoint is null ? "" : " checkpoint " + p.Checkpoint));
        });
        JsonNode Summary(StageResult r) => new JsonObject
        {
            ["stage"] = r.Stage, ["steps"] = r.Steps, ["steps_run"] = r.StepsRun, ["last_loss"] = r.LastLoss,
            ["seconds"] = Math.Round(r.Seconds, 1), ["folder"] = r.Folder,
        };

        if (settings.Stage is "vae" or "all")
        {
            var trainer = new TrainerOptions
            {
                Steps = settings.VaeSteps, Seed = settings.Seed, EmaDecay = ema, WarmupSteps = settings.VaeWarmup,
                Optimizer = new AdamWOptions { LearningRate = settings.Parse(settings.VaeLearningRate, "--vae-lr") },
                CheckpointEvery = settings.CheckpointEvery, CheckpointDir = Path.Combine(checkpoints, "vae"),
            };
            int crop = settings.VaeCrop == 0 || settings.VaeCrop >= imageSize ? 0 : settings.VaeCrop;
            var options = new VaeTrainingOptions { BatchSize = settings.VaeBatchSize, ImageSize = imageSize, CropSize = crop };
            cli.Error.WriteLine($"training the VAE: {settings.VaeSteps} steps of {settings.VaeBatchSize} scenes on {settings.Device}, checkpoints in {trainer.CheckpointDir}");
            results.Add(Summary(ShapesTraining.TrainVae(output, configs, trainer, options, device, settings.Resume, progress, cancellationToken)));
        }
        if (settings.Stage is "transformer" or "all")
        {
            string tokenizers = settings.Tokenizers ?? FindTokenizers()
                ?? throw new DirectoryNotFoundException("No CLIP tokenizer files found; pass --tokenizers with a pipeline folder that has tokenizer/ and tokenizer_2/.");
            var trainer = new TrainerOptions
            {
                Steps = settings.Steps, Seed = settings.Seed, EmaDecay = ema, WarmupSteps = settings.Warmup,
                Optimizer = new AdamWOptions { LearningRate = settings.Parse(settings.LearningRate, "--lr") },
                Schedule = settings.LearningRateSchedule == "cosine" ? LearningRateSchedule.Cosine : LearningRateSchedule.Constant,
                MinLearningRate = settings.Parse(settings.MinLearningRate, "--min-lr"),
                CheckpointEvery = settings.CheckpointEvery, CheckpointDir = Path.Combine(checkpoints, "transformer"),
            };
            var options = new TransformerTrainingOptions
            {
                BatchSize = settings.BatchSize, ImageSize = imageSize, TrainTextEncoders = !settings.FreezeTextEncoders,
                CaptionDropout = settings.Parse(settings.CaptionDropout, "--caption-dropout"), Objective = settings.Objective(),
            };
            cli.Error.WriteLine($"training the transformer: {settings.Steps} steps of {settings.BatchSize} scenes on {settings.Device}, checkpoints in {trainer.CheckpointDir}");
            results.Add(Summary(ShapesTraining.TrainTransformer(output, configs, trainer, options, tokenizers, device, settings.Resume, progress, cancellationToken,
                initFrom: settings.InitFrom)));
        }
        cli.Out.WriteLine(new JsonObject { ["output"] = output, ["seed"] = settings.Seed, ["stages"] = results }
            .ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return ExitCodes.Ok;
    }

    private static string? FindTokenizers()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                foreach (var candidate in new[] { "models/shapes-sd3", "tests/DiffusersSharp.Tests/Fixtures/tiny-sd3/model" })
                {
                    string path = Path.Combine(dir.FullName, candidate);
                    if (Directory.Exists(Path.Combine(path, "tokenizer")) && Directory.Exists(Path.Combine(path, "tokenizer_2"))) return path;
                }
        return null;
    }

    /// <summary>Reports on the training thread (Progress&lt;T&gt; would post to the thread pool and reorder lines).</summary>
    private sealed class SyncProgress(Action<TrainingProgress> report) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => report(value);
    }
}
