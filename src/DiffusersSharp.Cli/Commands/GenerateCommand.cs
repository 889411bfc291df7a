using DiffusersSharp.Images;
using DiffusersSharp.Pipelines.StableDiffusion3;
using Spectre.Console.Cli;

namespace DiffusersSharp.Cli.Commands;

/// <summary><c>diffusers generate</c>: text-to-image.</summary>
public sealed class GenerateCommand(CliOutput output) : Command<GenerateSettings>
{
    /// <inheritdoc />
    public override int Execute(CommandContext context, GenerateSettings settings, CancellationToken cancellationToken) =>
        GenerationRunner.Run(output, settings, "txt2img", 28, c => new StableDiffusion3Pipeline(c),
            new StableDiffusion3Request(), (pipe, request, runner) => pipe.Generate(request, runner.Progress, cancellationToken), cancellationToken);
}

/// <summary><c>diffusers img2img</c>: image-to-image.</summary>
public sealed class Img2ImgCommand(CliOutput output) : Command<Img2ImgSettings>
{
    /// <inheritdoc />
    public override int Execute(CommandContext context, Img2ImgSettings settings, CancellationToken cancellationToken)
    {
        var image = ImageFile.LoadRgb(settings.Image!); // before any model is loaded: an unreadable image is invalid input
        return GenerationRunner.Run(output, settings, "img2img", 50, c => new StableDiffusion3Img2ImgPipeline(c),
            new StableDiffusion3Img2ImgRequest { Image = image, Strength = settings.StrengthValue },
            (pipe, request, runner) => pipe.Generate(request, runner.Progress, cancellationToken), cancellationToken);
    }
}

/// <summary><c>diffusers inpaint</c>: repaint the white part of a mask.</summary>
public sealed class InpaintCommand(CliOutput output) : Command<InpaintSettings>
{
    /// <inheritdoc />
    public override int Execute(CommandContext context, InpaintSettings settings, CancellationToken cancellationToken)
    {
        var image = ImageFile.LoadRgb(settings.Image!);
        var mask = ImageFile.Load(settings.Mask!);
        return GenerationRunner.Run(output, settings, "inpaint", 50, c => new StableDiffusion3InpaintPipeline(c),
            new StableDiffusion3InpaintRequest { Image = image, MaskImage = mask, Strength = settings.StrengthValue },
            (pipe, request, runner) => pipe.Generate(request, runner.Progress, cancellationToken), cancellationToken);
    }
}
