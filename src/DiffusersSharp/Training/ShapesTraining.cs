using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Training;

/// <summary>A training stage's outcome.</summary>
/// <param name="Stage">"vae" or "transformer".</param>
/// <param name="Steps">Total steps of the stage.</param>
/// <param name="StepsRun">Steps run by this call (fewer after a resume).</param>
/// <param name="LastLoss">The last step's loss.</param>
/// <param name="Seconds">Wall time of this call.</param>
/// <param name="Folder">What was written (the VAE folder or the pipeline folder).</param>
public sealed record StageResult(string Stage, long Steps, long StepsRun, double LastLoss, double Seconds, string Folder);

/// <summary>
/// The two stages that make the shapes model, each ending in files of a diffusers pipeline folder: the VAE
/// (<c>OUTPUT/vae</c>, with shift and scaling factors measured on its latents), then the transformer trained jointly with
/// both CLIP encoders on that VAE's latents (the rest of the folder). Weights are written from the EMA.
/// </summary>
public static class ShapesTraining
{
    // Random initialisation draws from libtorch's global generator: seeding and building must not interleave with
    // another seeded build in this process, or the weights would depend on thread timing.
    private static readonly Lock SeededBuild = new();

    /// <summary>
    /// Seeds libtorch's global generator with <paramref name="seed"/> and runs <paramref name="build"/> (which creates
    /// randomly initialised models) while no other seeded build of this process runs, so the weights depend on the seed only.
    /// </summary>
    public static T BuildSeeded<T>(long seed, Func<T> build)
    {
        ArgumentNullException.ThrowIfNull(build);
        lock (SeededBuild)
        {
            random.manual_seed(seed);
            return build();
        }
    }

    /// <summary>Trains the VAE and writes <c>OUTPUT/vae</c>.</summary>
    public static StageResult TrainVae(string output, ShapesModelConfigs configs, TrainerOptions trainerOptions, VaeTrainingOptions options,
        Device? device = null, string? resume = null, IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default,
        ScalarType weightsDtype = ScalarType.Float16)
    {
        ArgumentException.ThrowIfNullOrEmpty(output);
        ArgumentNullException.ThrowIfNull(configs);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        device ??= CPU;
        using var vae = BuildSeeded(trainerOptions.Seed, () => new AutoencoderKL(configs.Vae, device));
        var task = new VaeTrainingTask(vae, options with { DataSeed = trainerOptions.Seed }, device);
        using var trainer = new Trainer(task, trainerOptions);
        if (resume is not null) trainer.Resume(resume);
        long run = trainer.Train(progress, cancellationToken);
        trainer.CopyEmaToModels();
        vae.eval();
        var (shift, scale) = VaeTrainingTask.LatentStatistics(vae, 256, trainerOptions.Seed, options.ImageSize, device);
        string folder = Path.Combine(output, "vae");
        ModelFolderWriter.WriteVae(folder, vae, configs.Vae with { ShiftFactor = Math.Round(shift, 4), ScalingFactor = Math.Round(scale, 4) }, weightsDtype);
        return new StageResult("vae", trainerOptions.Steps, run, trainer.LastLoss, clock.Elapsed.TotalSeconds, folder);
    }

    /// <summary>
    /// Trains the transformer and both CLIP encoders on the latents of <c>OUTPUT/vae</c> and writes the rest of the
    /// pipeline folder; the CLIP tokenizers are copied from <paramref name="tokenizerSource"/> (a pipeline folder with
    /// <c>tokenizer</c> and <c>tokenizer_2</c>).
    /// </summary>
    /// <remarks>
    /// <paramref name="initFrom"/>, a pipeline folder with the same transformer and CLIP configs, starts the models from its
    /// weights instead of a random initialisation (fine-tuning: a new optimizer, schedule and EMA); when OUTPUT has no
    /// <c>vae</c> yet, its VAE is used and copied there with the rest of the folder.
    /// </remarks>
    /// <exception cref="DirectoryNotFoundException">OUTPUT/vae (and <paramref name="initFrom"/>/vae) or the tokenizers are missing.</exception>
    /// <exception cref="ArgumentException"><paramref name="initFrom"/> holds models of other configs.</exception>
    public static StageResult TrainTransformer(string output, ShapesModelConfigs configs, TrainerOptions trainerOptions, TransformerTrainingOptions options,
        string tokenizerSource, Device? device = null, string? resume = null, IProgress<TrainingProgress>? progress = null,
        CancellationToken cancellationToken = default, ScalarType weightsDtype = ScalarType.Float16, string? initFrom = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(output);
        ArgumentNullException.ThrowIfNull(configs);
        string vaeFolder = Path.Combine(output, "vae");
        // Fine-tuning keeps the VAE whose latents the init weights learned, unless OUTPUT already has one of its own.
        string? inheritedVae = !Directory.Exists(vaeFolder) && initFrom is not null && Directory.Exists(Path.Combine(initFrom, "vae"))
            ? Path.Combine(initFrom, "vae") : null;
        if (inheritedVae is null && !Directory.Exists(vaeFolder))
            throw new DirectoryNotFoundException($"{vaeFolder} not found: train the VAE stage first (--stage vae), or fine-tune from a folder with a vae/.");
        if (!Directory.Exists(Path.Combine(tokenizerSource, "tokenizer")) || !Directory.Exists(Path.Combine(tokenizerSource, "tokenizer_2")))
            throw new DirectoryNotFoundException($"{tokenizerSource} has no tokenizer/ and tokenizer_2/ folders (CLIP vocab.json + merges.txt).");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        device ??= CPU;
        using var vae = AutoencoderKL.FromPretrained(inheritedVae ?? vaeFolder, ScalarType.Float32, device);
        var tokenizer = CLIPTokenizer.FromFolder(Path.Combine(tokenizerSource, "tokenizer"));
        var tokenizer2 = CLIPTokenizer.FromFolder(Path.Combine(tokenizerSource, "tokenizer_2"));
        var (transformer, textEncoder, textEncoder2) = initFrom is null
            ? BuildSeeded(trainerOptions.Seed, () => (new SD3Transformer2DModel(configs.Transformer, device),
                new CLIPTextModelWithProjection(configs.TextEncoder, device), new CLIPTextModelWithProjection(configs.TextEncoder2, device)))
            : LoadForFineTuning(initFrom, configs, device);
        using var disposeTransformer = transformer;
        using var disposeTextEncoder = textEncoder;
        using var disposeTextEncoder2 = textEncoder2;
        var task = new TransformerTrainingTask(transformer, textEncoder, textEncoder2, tokenizer, tokenizer2, vae, configs.Scheduler,
            options with { DataSeed = trainerOptions.Seed }, device);
        using var trainer = new Trainer(task, trainerOptions);
        if (resume is not null) trainer.Resume(resume);
        long run = trainer.Train(progress, cancellationToken);
        trainer.CopyEmaToModels();
        ModelFolderWriter.WritePipeline(output, transformer, textEncoder, textEncoder2, configs.Scheduler, tokenizerSource, weightsDtype);
        if (inheritedVae is not null) ModelFolderWriter.CopyVae(inheritedVae, vaeFolder);
        return new StageResult("transformer", trainerOptions.Steps, run, trainer.LastLoss, clock.Elapsed.TotalSeconds, output);
    }

    private static (SD3Transformer2DModel, CLIPTextModelWithProjection, CLIPTextModelWithProjection) LoadForFineTuning(string folder, ShapesModelConfigs configs, Device device)
    {
        var transformer = SD3Transformer2DModel.FromPretrained(Path.Combine(folder, "transformer"), ScalarType.Float32, device);
        var textEncoder = CLIPTextModelWithProjection.FromPretrained(Path.Combine(folder, "text_encoder"), ScalarType.Float32, device);
        var textEncoder2 = CLIPTextModelWithProjection.FromPretrained(Path.Combine(folder, "text_encoder_2"), ScalarType.Float32, device);
        static string Json<T>(T config) => System.Text.Json.JsonSerializer.Serialize(config, IO.ConfigJson.Options);
        string? differs = Json(transformer.Config) != Json(configs.Transformer) ? "transformer"
            : Json(textEncoder.Config) != Json(configs.TextEncoder) ? "text_encoder"
            : Json(textEncoder2.Config) != Json(configs.TextEncoder2) ? "text_encoder_2" : null;
        if (differs is null)
        {
            // Loaded models are for inference (no gradients); training needs them back.
            foreach (var p in transformer.parameters().Concat(textEncoder.parameters()).Concat(textEncoder2.parameters())) p.requires_grad = true;
            return (transformer, textEncoder, textEncoder2);
        }
        transformer.Dispose();
        textEncoder.Dispose();
        textEncoder2.Dispose();
        throw new ArgumentException($"{folder}/{differs} has another config than the model being trained; fine-tuning needs the same sizes.");
    }
}
