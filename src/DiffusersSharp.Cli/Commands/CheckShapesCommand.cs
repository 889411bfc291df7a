using System.ComponentModel;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Training;
using DiffusersSharp.Training.Shapes;
using Spectre.Console;
using Spectre.Console.Cli;

namespace DiffusersSharp.Cli.Commands;

/// <summary>
/// <c>diffusers check-shapes --model M</c>: generates held-out (or training) scene captions and reads the images back with
/// the scene checker; JSON with the rates on stdout, one line per image on stderr.
/// </summary>
public sealed class CheckShapesCommand(CliOutput cli) : Command<CheckShapesCommand.Settings>
{
    /// <summary>Options of <c>check-shapes</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        /// <summary>Model folder.</summary>
        [CommandOption("--model <MODEL>"), Description("A shapes model folder (diffusers layout).")]
        public string Model { get; init; } = "";

        /// <summary>Captions.</summary>
        [CommandOption("--count <N>"), Description("Number of captions (default 50)."), DefaultValue(50)]
        public int Count { get; init; } = 50;

        /// <summary>Caption set.</summary>
        [CommandOption("--split <SPLIT>"), Description("held-out (combinations never trained on; default) or train."), DefaultValue("held-out")]
        public string Split { get; init; } = "held-out";

        /// <summary>Caption seed.</summary>
        [CommandOption("--caption-seed <S>"), Description("Seed of the caption list (default 0)."), DefaultValue(0L)]
        public long CaptionSeed { get; init; }

        /// <summary>Seed of the first image.</summary>
        [CommandOption("--seed <S>"), Description("Seed of the first image; image i uses seed + i (default 0)."), DefaultValue(0L)]
        public long Seed { get; init; }

        /// <summary>Steps.</summary>
        [CommandOption("--steps <N>"), Description("Denoising steps (default: the pipeline's).")]
        public int? Steps { get; init; }

        /// <summary>Guidance.</summary>
        [CommandOption("--guidance <G>"), Description("Guidance scale (default 7)."), DefaultValue("7")]
        public string Guidance { get; init; } = "7";

        /// <summary>Negative prompt.</summary>
        [CommandOption("--negative-prompt <TEXT>"), Description("Negative prompt for every image.")]
        public string? NegativePrompt { get; init; }

        /// <summary>Mode.</summary>
        [CommandOption("--mode <MODE>"), Description("t2i (default), negative (negative prompt naming another shape), img2img (recolour a drawn scene) or inpaint (replace the shape inside its box)."), DefaultValue("t2i")]
        public string Mode { get; init; } = "t2i";

        /// <summary>Strength.</summary>
        [CommandOption("--strength <X>"), Description("Strength of img2img and inpaint (default: the pipeline's, 0.6).")]
        public string? Strength { get; init; }

        /// <summary>Image folder.</summary>
        [CommandOption("--save-dir <DIR>"), Description("Also write the images (NNN.png) here.")]
        public string? SaveDir { get; init; }

        /// <inheritdoc />
        public override ValidationResult Validate()
        {
            if (string.IsNullOrWhiteSpace(Model)) return ValidationResult.Error("--model is required.");
            if (Count < 1) return ValidationResult.Error("--count must be at least 1.");
            if (Split is not ("held-out" or "train")) return ValidationResult.Error($"--split must be held-out or train, got '{Split}'.");
            if (!double.TryParse(Guidance, NumberStyles.Float, CultureInfo.InvariantCulture, out _)) return ValidationResult.Error($"--guidance must be a number, got '{Guidance}'.");
            if (Mode is not ("t2i" or "negative" or "img2img" or "inpaint")) return ValidationResult.Error($"--mode must be t2i, negative, img2img or inpaint, got '{Mode}'.");
            if (Strength is not null && !(double.TryParse(Strength, NumberStyles.Float, CultureInfo.InvariantCulture, out double st) && st is >= 0 and <= 1))
                return ValidationResult.Error($"--strength must be a number in [0, 1], got '{Strength}'.");
            return ValidationResult.Success();
        }
    }

    /// <inheritdoc />
    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var scenes = settings.Split == "held-out"
            ? ShapeScenes.HeldOutScenes(settings.Count, settings.CaptionSeed)
            : ShapeScenes.TrainingScenes(settings.CaptionSeed).Take(settings.Count).ToArray();
        using var components = StableDiffusion3Components.FromPretrained(settings.Model, new PipelineLoadOptions(), cancellationToken);
        if (settings.SaveDir is not null) Directory.CreateDirectory(settings.SaveDir);
        int index = 0;
        var progress = new Reporter(item =>
        {
            if (settings.SaveDir is not null) ImageFile.SavePng(item.Image, Path.Combine(settings.SaveDir, $"{index:D3}.png"));
            cli.Error.WriteLine($"{index:D3} {(item.Mismatches.Count == 0 ? "ok   " : "WRONG")} \"{item.Caption}\""
                + (item.Source is null ? "" : $" from \"{item.Source.Caption}\"") + (item.NegativePrompt is null ? "" : $" not \"{item.NegativePrompt}\"")
                + $" -> {item.Reading.Description?.Caption ?? item.Reading.ToString()}"
                + (item.Mismatches.Count == 0 ? "" : $" ({string.Join(", ", item.Mismatches)})"));
            index++;
        });
        var mode = settings.Mode switch
        {
            "negative" => ShapesEvaluationMode.NegativePrompt,
            "img2img" => ShapesEvaluationMode.ImageToImage,
            "inpaint" => ShapesEvaluationMode.Inpainting,
            _ => ShapesEvaluationMode.TextToImage,
        };
        var result = ShapesEvaluation.Run(components, scenes, new ShapesEvaluationSettings
        {
            Mode = mode, Steps = settings.Steps, GuidanceScale = double.Parse(settings.Guidance, CultureInfo.InvariantCulture), Seed = settings.Seed,
            NegativePrompt = settings.NegativePrompt, Strength = settings.Strength is null ? null : double.Parse(settings.Strength, CultureInfo.InvariantCulture),
        }, progress, cancellationToken);
        var s = result.Score;
        cli.Out.WriteLine(new JsonObject
        {
            ["model"] = settings.Model, ["split"] = settings.Split, ["mode"] = settings.Mode, ["count"] = s.Total, ["correct"] = s.Correct, ["rate"] = Math.Round(s.Rate, 4),
            ["avoided"] = result.Avoided, ["avoided_means"] = AvoidedMeaning(mode),
            ["background"] = s.BackgroundCorrect, ["shape_color"] = s.ShapeColorCorrect, ["shape"] = s.ShapeCorrect,
            ["position"] = s.PositionCorrect, ["position_checked"] = s.PositionChecked, ["no_shape"] = s.NoShape,
            ["seconds_per_image"] = Math.Round(result.SecondsPerImage, 3), ["summary"] = s.ToString(),
        }.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return ExitCodes.Ok;
    }

    private static string? AvoidedMeaning(ShapesEvaluationMode mode) => mode switch
    {
        ShapesEvaluationMode.NegativePrompt => "images not showing the negative prompt's shape",
        ShapesEvaluationMode.ImageToImage => "images whose shape no longer has the source's colour",
        ShapesEvaluationMode.Inpainting => "images whose shape is no longer the source's kind",
        _ => null,
    };

    private sealed class Reporter(Action<ShapesEvaluationItem> report) : IProgress<ShapesEvaluationItem>
    {
        public void Report(ShapesEvaluationItem value) => report(value);
    }
}
