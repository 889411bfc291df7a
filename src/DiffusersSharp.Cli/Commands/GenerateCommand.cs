using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using Spectre.Console.Cli;

namespace DiffusersSharp.Cli.Commands;

/// <summary><c>diffusers generate</c>: text-to-image.</summary>
public sealed class GenerateCommand(CliOutput output) : Command<GenerateSettings>
{
    /// <inheritdoc />
    public override int Execute(CommandContext context, GenerateSettings settings, CancellationToken cancellationToken) =>
        GenerationRunner.Run(output, settings, "txt2img", new TextToImage(), cancellationToken);
}

/// <summary><c>diffusers img2img</c>: image-to-image.</summary>
public sealed class Img2ImgCommand(CliOutput output) : Command<Img2ImgSettings>
{
    /// <inheritdoc />
    public override int Execute(CommandContext context, Img2ImgSettings settings, CancellationToken cancellationToken)
    {
        var image = ImageFile.LoadRgb(settings.Image!); // before any model is loaded: an unreadable image is invalid input
        return GenerationRunner.Run(output, settings, "img2img", new ImageToImage(image, settings.StrengthValue), cancellationToken);
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
        return GenerationRunner.Run(output, settings, "inpaint", new Inpaint(image, mask, settings.StrengthValue), cancellationToken);
    }
}

/// <summary>A verb's pipelines in each model family, and its request before the shared options are filled in.</summary>
internal abstract class VerbPipelines
{
    /// <summary>The SD3 pipeline's default step count (diffusers': 28 text-to-image, 50 otherwise).</summary>
    public abstract int Sd3DefaultSteps { get; }

    /// <summary>The UNet pipelines' default step count (50).</summary>
    public int UNetDefaultSteps => 50;

    /// <summary>The verb's SD3 request.</summary>
    public abstract StableDiffusion3Request Sd3Request();

    /// <summary>The verb's UNet request.</summary>
    public abstract StableDiffusionRequest UNetRequest();

    /// <summary>Runs the verb's SD3 pipeline.</summary>
    public abstract StableDiffusion3Output RunSd3(StableDiffusion3Components components, StableDiffusion3Request request,
        Action<string, int, int> onTruncated, IProgress<PipelineProgress> progress, CancellationToken ct);

    /// <summary>Runs the verb's SD 1.x / 2.x or SDXL pipeline; also returns the guidance and strength it used.</summary>
    public abstract (StableDiffusionPipelineOutput Output, double Guidance, double? Strength) RunUNet(StableDiffusionComponents components,
        StableDiffusionRequest request, Action<string, int, int> onTruncated, IProgress<PipelineProgress> progress, CancellationToken ct);

    /// <summary>Runs <paramref name="pipeline"/> and disposes it.</summary>
    protected static (StableDiffusionPipelineOutput, double, double?) Use<TPipe>(TPipe pipeline, StableDiffusionRequest request,
        Action<string, int, int> onTruncated, Func<TPipe, StableDiffusionPipelineOutput> run) where TPipe : StableDiffusionPipelineBase
    {
        using (pipeline)
        {
            pipeline.OnPromptTruncated = onTruncated;
            return (run(pipeline), pipeline.GuidanceOf(request), request is StableDiffusionImg2ImgRequest i ? pipeline.StrengthOf(i) : null);
        }
    }

    /// <summary>Runs an SD3 pipeline and disposes it.</summary>
    protected static StableDiffusion3Output Use<TPipe>(TPipe pipeline, Action<string, int, int> onTruncated, Func<TPipe, StableDiffusion3Output> run)
        where TPipe : StableDiffusion3PipelineBase
    {
        using (pipeline)
        {
            pipeline.OnPromptTruncated = onTruncated;
            return run(pipeline);
        }
    }
}

/// <summary><c>generate</c>'s pipelines.</summary>
internal sealed class TextToImage : VerbPipelines
{
    public override int Sd3DefaultSteps => 28;

    public override StableDiffusion3Request Sd3Request() => new();

    public override StableDiffusionRequest UNetRequest() => new();

    public override StableDiffusion3Output RunSd3(StableDiffusion3Components components, StableDiffusion3Request request,
        Action<string, int, int> onTruncated, IProgress<PipelineProgress> progress, CancellationToken ct) =>
        Use(new StableDiffusion3Pipeline(components), onTruncated, p => p.Generate(request, progress, ct));

    public override (StableDiffusionPipelineOutput, double, double?) RunUNet(StableDiffusionComponents components, StableDiffusionRequest request,
        Action<string, int, int> onTruncated, IProgress<PipelineProgress> progress, CancellationToken ct) => components.IsXL
        ? Use(new StableDiffusionXLPipeline(components), request, onTruncated, p => p.Generate(request, progress, ct))
        : Use(new StableDiffusionPipeline(components), request, onTruncated, p => p.Generate(request, progress, ct));
}

/// <summary><c>img2img</c>'s pipelines.</summary>
internal sealed class ImageToImage(ImageBuffer image, double? strength) : VerbPipelines
{
    public override int Sd3DefaultSteps => 50;

    public override StableDiffusion3Request Sd3Request()
    {
        var request = new StableDiffusion3Img2ImgRequest { Image = image };
        return strength is { } s ? request with { Strength = s } : request;
    }

    public override StableDiffusionRequest UNetRequest() => new StableDiffusionImg2ImgRequest { Image = image, Strength = strength };

    public override StableDiffusion3Output RunSd3(StableDiffusion3Components components, StableDiffusion3Request request,
        Action<string, int, int> onTruncated, IProgress<PipelineProgress> progress, CancellationToken ct) =>
        Use(new StableDiffusion3Img2ImgPipeline(components), onTruncated, p => p.Generate((StableDiffusion3Img2ImgRequest)request, progress, ct));

    public override (StableDiffusionPipelineOutput, double, double?) RunUNet(StableDiffusionComponents components, StableDiffusionRequest request,
        Action<string, int, int> onTruncated, IProgress<PipelineProgress> progress, CancellationToken ct)
    {
        var r = (StableDiffusionImg2ImgRequest)request;
        return components.IsXL
            ? Use(new StableDiffusionXLImg2ImgPipeline(components), r, onTruncated, p => p.Generate(r, progress, ct))
            : Use(new StableDiffusionImg2ImgPipeline(components), r, onTruncated, p => p.Generate(r, progress, ct));
    }
}

/// <summary><c>inpaint</c>'s pipelines.</summary>
internal sealed class Inpaint(ImageBuffer image, ImageBuffer mask, double? strength) : VerbPipelines
{
    public override int Sd3DefaultSteps => 50;

    public override StableDiffusion3Request Sd3Request()
    {
        var request = new StableDiffusion3InpaintRequest { Image = image, MaskImage = mask };
        return strength is { } s ? request with { Strength = s } : request;
    }

    public override StableDiffusionRequest UNetRequest() => new StableDiffusionInpaintRequest { Image = image, MaskImage = mask, Strength = strength };

    public override StableDiffusion3Output RunSd3(StableDiffusion3Components components, StableDiffusion3Request request,
        Action<string, int, int> onTruncated, IProgress<PipelineProgress> progress, CancellationToken ct) =>
        Use(new StableDiffusion3InpaintPipeline(components), onTruncated, p => p.Generate((StableDiffusion3InpaintRequest)request, progress, ct));

    public override (StableDiffusionPipelineOutput, double, double?) RunUNet(StableDiffusionComponents components, StableDiffusionRequest request,
        Action<string, int, int> onTruncated, IProgress<PipelineProgress> progress, CancellationToken ct)
    {
        var r = (StableDiffusionInpaintRequest)request;
        return components.IsXL
            ? Use(new StableDiffusionXLInpaintPipeline(components), r, onTruncated, p => p.Generate(r, progress, ct))
            : Use(new StableDiffusionInpaintPipeline(components), r, onTruncated, p => p.Generate(r, progress, ct));
    }
}
