using System.Globalization;
using DiffusersSharp.Cli.Commands;

namespace DiffusersSharp.Cli.Web;

/// <summary>
/// The body of <c>POST /api/generate</c> (JSON, snake_case): the generation options of the CLI verbs, with the input image
/// and mask as data URLs or base64. Load-time options (device, dtype, LoRA, T5) belong to <c>serve</c> itself.
/// </summary>
public sealed record WebGenerateRequest
{
    /// <summary>txt2img (default), img2img or inpaint.</summary>
    public string Mode { get; init; } = "txt2img";

    /// <summary>The prompt.</summary>
    public string? Prompt { get; init; }

    /// <summary>The second encoder's prompt (SD3, SDXL).</summary>
    public string? Prompt2 { get; init; }

    /// <summary>The negative prompt.</summary>
    public string? NegativePrompt { get; init; }

    /// <summary>Denoising steps (default: the pipeline's).</summary>
    public int? Steps { get; init; }

    /// <summary>Guidance scale (default: the pipeline's).</summary>
    public double? Guidance { get; init; }

    /// <summary>Seed (default: random, reported back).</summary>
    public long? Seed { get; init; }

    /// <summary>Width in pixels.</summary>
    public int? Width { get; init; }

    /// <summary>Height in pixels.</summary>
    public int? Height { get; init; }

    /// <summary>img2img / inpaint strength.</summary>
    public double? Strength { get; init; }

    /// <summary>UNet models: the scheduler short name or class (default: the model's).</summary>
    public string? Scheduler { get; init; }

    /// <summary>UNet models with DDIM: the step noise (0 to 1).</summary>
    public double? Eta { get; init; }

    /// <summary>UNet models: guidance rescale (0 to 1).</summary>
    public double? GuidanceRescale { get; init; }

    /// <summary>Flux models: the true-CFG scale (above 1, with a negative prompt: a second, negative pass per step).</summary>
    public double? TrueCfg { get; init; }

    /// <summary>Images to generate.</summary>
    public int NumImages { get; init; } = 1;

    /// <summary>Send a decoded preview every this many steps (none when absent).</summary>
    public int? PreviewEvery { get; init; }

    /// <summary>The starting image (img2img, inpaint): a data URL or base64 PNG / JPEG.</summary>
    public string? Image { get; init; }

    /// <summary>The inpainting mask (white is repainted): a data URL or base64 PNG / JPEG.</summary>
    public string? Mask { get; init; }

    /// <summary>
    /// The options as the CLI verb of <see cref="Mode"/> has them, with the uploaded images written to files in
    /// <paramref name="uploads"/>; validated by the same checks as the command line.
    /// </summary>
    /// <exception cref="ArgumentException">An unknown mode, an image that is not base64, or an option the verb refuses.</exception>
    internal GenerateSettings ToSettings(string model, string uploads)
    {
        string? Upload(string? data, string name)
        {
            if (data is null) return null;
            int comma = data.StartsWith("data:", StringComparison.Ordinal) ? data.IndexOf(',') : -1;
            byte[] bytes;
            try { bytes = Convert.FromBase64String(comma >= 0 ? data[(comma + 1)..] : data); }
            catch (FormatException) { throw new ArgumentException($"{name} must be a data URL or base64 of a PNG or JPEG file."); }
            string path = Path.Combine(uploads, name);
            File.WriteAllBytes(path, bytes);
            return path;
        }
        string? guidance = Guidance?.ToString("R", CultureInfo.InvariantCulture);
        string? strength = Strength?.ToString("R", CultureInfo.InvariantCulture);
        string? eta = Eta?.ToString("R", CultureInfo.InvariantCulture);
        string? rescale = GuidanceRescale?.ToString("R", CultureInfo.InvariantCulture);
        string? trueCfg = TrueCfg?.ToString("R", CultureInfo.InvariantCulture);
        // Settings are init-only (as the command line fills them): one initializer per verb, the shared options in each.
        GenerateSettings settings = Mode switch
        {
            "txt2img" => new GenerateSettings
            {
                Model = model, Prompt = Prompt, Prompt2 = Prompt2, NegativePrompt = NegativePrompt, Steps = Steps, Guidance = guidance, Seed = Seed,
                Width = Width, Height = Height, Scheduler = Scheduler, NumImages = NumImages, PreviewEvery = PreviewEvery, Eta = eta, GuidanceRescale = rescale,
                TrueCfg = trueCfg,
            },
            "img2img" => new Img2ImgSettings
            {
                Model = model, Prompt = Prompt, Prompt2 = Prompt2, NegativePrompt = NegativePrompt, Steps = Steps, Guidance = guidance, Seed = Seed,
                Width = Width, Height = Height, Scheduler = Scheduler, NumImages = NumImages, PreviewEvery = PreviewEvery, Eta = eta, GuidanceRescale = rescale,
                TrueCfg = trueCfg,
                Image = Upload(Image, "image"), Strength = strength,
            },
            "inpaint" => new InpaintSettings
            {
                Model = model, Prompt = Prompt, Prompt2 = Prompt2, NegativePrompt = NegativePrompt, Steps = Steps, Guidance = guidance, Seed = Seed,
                Width = Width, Height = Height, Scheduler = Scheduler, NumImages = NumImages, PreviewEvery = PreviewEvery, Eta = eta, GuidanceRescale = rescale,
                TrueCfg = trueCfg,
                Image = Upload(Image, "image"), Mask = Upload(Mask, "mask"), Strength = strength,
            },
            _ => throw new ArgumentException($"mode must be txt2img, img2img or inpaint, got '{Mode}'."),
        };
        var result = settings.Validate();
        if (!result.Successful) throw new ArgumentException(WebText.WithoutDashes(result.Message ?? "invalid request"));
        return settings;
    }
}
