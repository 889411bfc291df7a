using System.ComponentModel;
using System.Text.Json;
using DiffusersSharp.Benchmarks;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Runtime;
using Spectre.Console;
using Spectre.Console.Cli;

namespace DiffusersSharp.Cli.Commands;

/// <summary>
/// <c>diffusers bench (--model M | --random-weights PRESET) --device cpu|cuda --dtype T --height H --width W --steps N</c>:
/// times the denoiser (transformer or UNet) forward, the pipeline, the VAE decode and the text encoders as diffusers'
/// reference scripts do, for SD3, SDXL, SD 1.x / 2.x and Flux.1, with peak memory and cold start, and prints one JSON
/// document on stdout (progress on stderr). Options the model's family lacks are refused before anything loads.
/// </summary>
public sealed class BenchCommand(CliOutput output) : Command<BenchCommand.Settings>
{
    /// <summary>Options of <c>bench</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        /// <summary>Model folder or hub id.</summary>
        [CommandOption("--model <MODEL>"), Description("Model folder in the diffusers layout, or a Hugging Face repo id (or use --random-weights).")]
        public string? Model { get; init; }

        /// <summary>Random weights preset or config folder.</summary>
        [CommandOption("--random-weights <PRESET>"), Description("Build the denoiser, VAE and text encoders with random weights (std 0.02) on the device instead of loading: sd3.5-medium, sdxl-base, sd1.5, flux.1-schnell, flux.1-dev, or a pipeline folder whose configs to use.")]
        public string? RandomWeights { get; init; }

        /// <summary>Device.</summary>
        [CommandOption("--device <DEVICE>"), Description("cpu, cuda or cuda:N. Default cpu.")]
        [DefaultValue("cpu")]
        public string Device { get; init; } = "cpu";

        /// <summary>Dtype.</summary>
        [CommandOption("--dtype <DTYPE>"), Description("float32, bfloat16 or float16. Default float32.")]
        [DefaultValue("float32")]
        public string Dtype { get; init; } = "float32";

        /// <summary>Height.</summary>
        [CommandOption("--height <H>"), Description("Image height, a multiple of 16 (UNet models: 8). Default: the family's (1024; SD 1.x / 2.x: the UNet's, 512 for 1.5).")]
        public int? Height { get; init; }

        /// <summary>Width.</summary>
        [CommandOption("--width <W>"), Description("Image width, a multiple of 16 (UNet models: 8). Default as --height.")]
        public int? Width { get; init; }

        /// <summary>Steps.</summary>
        [CommandOption("--steps <N>"), Description("Pipeline steps. Default: SD3 40, SDXL and SD 50, FLUX.1-dev 50, FLUX.1-schnell 4.")]
        public int? Steps { get; init; }

        /// <summary>Guidance.</summary>
        [CommandOption("--guidance <SCALE>"), Description("Guidance scale (SD3 / UNet models: above 1 is CFG, batch 2; FLUX.1-dev: the embedded guidance; refused for FLUX.1-schnell). Default: SD3 4.5, SDXL 5.0, SD 7.5, FLUX.1-dev 3.5.")]
        public double? Guidance { get; init; }

        /// <summary>Warm-up runs.</summary>
        [CommandOption("--warmup <N>"), Description("Untimed runs before the timed ones, per measure. Default 1.")]
        [DefaultValue(1)]
        public int Warmup { get; init; } = 1;

        /// <summary>Timed runs.</summary>
        [CommandOption("--runs <N>"), Description("Timed runs per measure; the median is reported. Default 3.")]
        [DefaultValue(3)]
        public int Runs { get; init; } = 3;

        /// <summary>T5 tokens.</summary>
        [CommandOption("--max-sequence-length <N>"), Description("T5 tokens (SD3: prompt embeddings have 77 + N tokens; Flux: N). Default: SD3 256, FLUX.1-dev 512, FLUX.1-schnell 256. Not for UNet models.")]
        public int? MaxSequenceLength { get; init; }

        /// <summary>Drop T5.</summary>
        [CommandOption("--no-t5"), Description("SD3: leave T5 out (not loaded, not timed).")]
        public bool NoT5 { get; init; }

        /// <summary>Full text sequence without T5.</summary>
        [CommandOption("--full-text-sequence"), Description("With --no-t5: run the pipeline over T5's zero rows as they are (as diffusers does) instead of as one counted attention key (the default on the CPU).")]
        public bool FullTextSequence { get; init; }

        /// <summary>Collapsed text without T5, on any device.</summary>
        [CommandOption("--collapse-text"), Description("With --no-t5: run T5's zero rows as one counted attention key on any device (the default on the CPU only: on CUDA the key's additive mask keeps attention off the flash kernel).")]
        public bool CollapseText { get; init; }

        /// <summary>Offload mode.</summary>
        [CommandOption("--offload <MODE>"), Description("none, or model (diffusers' enable_model_cpu_offload: one model on the device at a time). Default none.")]
        [DefaultValue("none")]
        public string Offload { get; init; } = "none";

        /// <summary>Write the random model instead of benchmarking.</summary>
        [CommandOption("--save-model <DIR>"), Description("With --random-weights and an SD3 preset or config folder: write the random transformer, VAE and scheduler (in --dtype) as a diffusers folder without text encoders, with random prompt embeddings in DIR/random_prompt_embeds.safetensors, and print what was written instead of benchmarking: `generate --model DIR --prompt-embeds DIR/random_prompt_embeds.safetensors` then starts cold from local disk, as diffusers' cold-start reference.")]
        public string? SaveModel { get; init; }

        /// <inheritdoc />
        public override ValidationResult Validate()
        {
            if ((Model is null) == (RandomWeights is null))
                return ValidationResult.Error("Give exactly one of --model and --random-weights.");
            if (FullTextSequence && !NoT5)
                return ValidationResult.Error("--full-text-sequence only applies with --no-t5 (T5's zero rows are what it keeps).");
            if (CollapseText && !NoT5)
                return ValidationResult.Error("--collapse-text only applies with --no-t5 (T5's zero rows are what it collapses).");
            if (CollapseText && FullTextSequence)
                return ValidationResult.Error("Give --collapse-text or --full-text-sequence, not both.");
            if (Offload is not ("none" or "model"))
                return ValidationResult.Error($"--offload must be none or model, got '{Offload}'.");
            if (SaveModel is not null && RandomWeights is null)
                return ValidationResult.Error("--save-model writes random weights: give --random-weights, not --model.");
            if (SaveModel is { Length: 0 })
                return ValidationResult.Error("--save-model needs a folder.");
            return ValidationResult.Success();
        }
    }

    /// <inheritdoc />
    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var options = new BenchmarkOptions
        {
            Model = settings.Model, RandomWeights = settings.RandomWeights, Device = settings.Device, Dtype = settings.Dtype,
            Height = settings.Height, Width = settings.Width, Steps = settings.Steps, GuidanceScale = settings.Guidance,
            Warmup = settings.Warmup, Runs = settings.Runs, MaxSequenceLength = settings.MaxSequenceLength, NoT5 = settings.NoT5, CollapseRepeatedText = settings.FullTextSequence ? false : settings.CollapseText ? true : null,
            Offload = settings.Offload == "model" ? OffloadMode.Model : OffloadMode.None,
        };
        options.Validate();
        if (settings.SaveModel is { } folder)
        {
            if (ModelConfigs.Resolve(settings.RandomWeights!) is not PipelineConfigs sd3)
                throw new ArgumentException($"--save-model writes SD3 pipelines; {settings.RandomWeights} is another family.");
            var saved = RandomModelFolder.Write(folder, sd3, TorchDevices.Parse(settings.Device), TorchDtypes.Parse(settings.Dtype),
                settings.MaxSequenceLength ?? 256, options.Seed, line => output.Error.WriteLine(line), cancellationToken);
            output.Out.WriteLine(JsonSerializer.Serialize(saved, JsonOptions));
            return ExitCodes.Ok;
        }
        var report = PipelineBenchmark.Run(options, line => output.Error.WriteLine(line), cancellationToken);
        output.Out.WriteLine(JsonSerializer.Serialize(report, JsonOptions));
        return ExitCodes.Ok;
    }

    /// <summary>snake_case names, indented (the dictionaries' keys are written as they are).</summary>
    internal static JsonSerializerOptions JsonOptions { get; } = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping, // a JSON file, not HTML: keep "+" and ">"
    };
}
