using DiffusersSharp.Pipelines.StableDiffusion3;
using Spectre.Console.Cli;

namespace DiffusersSharp.Cli.Commands;

/// <summary><c>diffusers generate</c>: text-to-image.</summary>
public sealed class GenerateCommand(CliOutput output) : Command<GenerateSettings>
{
    /// <inheritdoc />
    public override int Execute(CommandContext context, GenerateSettings settings, CancellationToken cancellationToken)
    {
        using var runner = new GenerationRunner(output, settings);
        using var components = runner.LoadComponents(cancellationToken);
        using var pipe = new StableDiffusion3Pipeline(components);
        pipe.OnPromptTruncated = (tokenizer, length, limit) =>
            output.Error.WriteLine($"warning: the prompt is {length} tokens for {tokenizer}; only {limit} are used.");
        var request = runner.Fill(new StableDiffusion3Request());
        using var result = pipe.Generate(request, runner.Progress, cancellationToken);
        runner.Write(result, "txt2img", settings.Steps ?? 28, settings.Model!);
        return ExitCodes.Ok;
    }
}

/// <summary><c>diffusers img2img</c>: image-to-image.</summary>
public sealed class Img2ImgCommand(CliOutput output) : Command<Img2ImgSettings>
{
    /// <inheritdoc />
    public override int Execute(CommandContext context, Img2ImgSettings settings, CancellationToken cancellationToken)
    {
        var image = Images.ImageFile.LoadRgb(settings.Image!);
        using var runner = new GenerationRunner(output, settings);
        using var components = runner.LoadComponents(cancellationToken);
        using var pipe = new StableDiffusion3Img2ImgPipeline(components);
        pipe.OnPromptTruncated = (tokenizer, length, limit) =>
            output.Error.WriteLine($"warning: the prompt is {length} tokens for {tokenizer}; only {limit} are used.");
        var request = runner.Fill(new StableDiffusion3Img2ImgRequest { Image = image, Strength = settings.StrengthValue });
        using var result = pipe.Generate(request, runner.Progress, cancellationToken);
        runner.Write(result, "img2img", settings.Steps ?? 50, settings.Model!);
        return ExitCodes.Ok;
    }
}

/// <summary><c>diffusers inpaint</c>: repaint the white part of a mask.</summary>
public sealed class InpaintCommand(CliOutput output) : Command<InpaintSettings>
{
    /// <inheritdoc />
    public override int Execute(CommandContext context, InpaintSettings settings, CancellationToken cancellationToken)
    {
        var image = Images.ImageFile.LoadRgb(settings.Image!);
        var mask = Images.ImageFile.Load(settings.Mask!);
        using var runner = new GenerationRunner(output, settings);
        using var components = runner.LoadComponents(cancellationToken);
        using var pipe = new StableDiffusion3InpaintPipeline(components);
        pipe.OnPromptTruncated = (tokenizer, length, limit) =>
            output.Error.WriteLine($"warning: the prompt is {length} tokens for {tokenizer}; only {limit} are used.");
        var request = runner.Fill(new StableDiffusion3InpaintRequest { Image = image, MaskImage = mask, Strength = settings.StrengthValue });
        using var result = pipe.Generate(request, runner.Progress, cancellationToken);
        runner.Write(result, "inpaint", settings.Steps ?? 50, settings.Model!);
        return ExitCodes.Ok;
    }
}
