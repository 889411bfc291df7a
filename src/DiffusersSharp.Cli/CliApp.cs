using DiffusersSharp.Cli.Commands;
using Spectre.Console.Cli;

namespace DiffusersSharp.Cli;

/// <summary>The <c>diffusers</c> command: verbs, and the mapping of failures to exit codes (2 invalid input, 1 other).</summary>
public static class CliApp
{
    /// <summary>Runs the command line; returns the process exit code.</summary>
    public static int Run(string[] args, TextWriter? stdout = null, TextWriter? stderr = null)
    {
        stdout ??= Console.Out;
        stderr ??= Console.Error;
        var app = new CommandApp();
        app.Configure(config =>
        {
            config.SetApplicationName("diffusers");
            config.PropagateExceptions();
            config.UseStrictParsing();
            config.Settings.Registrar.RegisterInstance(new CliOutput(stdout, stderr));
            config.AddCommand<GenerateCommand>("generate").WithDescription("Text-to-image.");
            config.AddCommand<Img2ImgCommand>("img2img").WithDescription("Image-to-image: --image and --strength.");
            config.AddCommand<InpaintCommand>("inpaint").WithDescription("Inpainting: --image and --mask (white is repainted).");
            config.AddCommand<ServeCommand>("serve").WithDescription("Web UI: load a model once and generate from a browser (text-to-image, img2img, inpainting, step previews).");
            config.AddCommand<InfoCommand>("info").WithDescription("Components, classes, dtypes and sizes of a model, from headers and configs only.");
            config.AddCommand<DownloadCommand>("download").WithDescription("Fetch a Hugging Face repo's pipeline files into the hub cache; prints the snapshot folder.");
            config.AddCommand<TokenizeCommand>("tokenize").WithDescription("Token ids of a prompt for each tokenizer of a model, as the pipeline pads them; warns when the prompt is cut.");
            config.AddCommand<TrainCommand>("train").WithDescription("Train the shapes model (VAE, then transformer + CLIP encoders) on scenes drawn on the fly; writes a pipeline folder.");
            config.AddCommand<CheckShapesCommand>("check-shapes").WithDescription("Quality of a shapes model: generate scene captions and read the images back with the scene checker; JSON rates.");
            config.AddCommand<BenchCommand>("bench").WithDescription("Benchmark like diffusers' reference: transformer forward, pipeline, VAE decode, text encoders, peak memory, cold start; one JSON document.");
            config.AddCommand<CheckFullSizeCommand>("check-full-size").WithDescription("GPU parity check: replay the full-size fixture's seeded SD3.5-Medium transformer and SD3 VAE in bf16 on CUDA; JSON with errors vs diffusers and timings.");
        });
        try
        {
            return app.Run(args);
        }
        catch (Exception e) when (ExitCodes.IsInvalidInput(e))
        {
            stderr.WriteLine($"error: {ExitCodes.OneLine(e)}");
            return ExitCodes.InvalidInput;
        }
        catch (OperationCanceledException)
        {
            stderr.WriteLine("cancelled");
            return ExitCodes.Failure;
        }
        catch (Exception e)
        {
            stderr.WriteLine($"error: {ExitCodes.OneLine(e)}");
            return ExitCodes.Failure;
        }
    }
}

/// <summary>Where commands write: stdout for results (JSON), stderr for progress and messages.</summary>
public sealed record CliOutput(TextWriter Out, TextWriter Error);
