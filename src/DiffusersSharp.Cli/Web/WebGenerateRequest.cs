using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
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

    /// <summary>UNet models with DDIM or TCD: the step noise (DDIM's eta, TCD's gamma; 0 to 1).</summary>
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

    /// <summary>With a server started with --lora: the scale to fuse it at for this and later requests (the LoRA is taken
    /// out and fused again when it changes, diffusers' unfuse_lora + fuse_lora(lora_scale)).</summary>
    public double? LoraScale { get; init; }

    /// <summary>Inpaint: inpaint only the mask's bounding box grown by this many pixels, at the full size, pasted back onto the
    /// image (diffusers' padding_mask_crop); the result keeps the image's size.</summary>
    public int? PaddingMaskCrop { get; init; }

    /// <summary>With one ControlNet on the server: its control image (edge map, depth map...), a data URL or base64.</summary>
    public string? ControlImage { get; init; }

    /// <summary>One control image per ControlNet of the server, in its order (instead of <see cref="ControlImage"/>).</summary>
    public string[]? ControlImages { get; init; }

    /// <summary>ControlNet conditioning scale: one number for all ControlNets, or a list with one per ControlNet.</summary>
    [JsonConverter(typeof(NumberOrListConverter))]
    public double[]? ControlnetScale { get; init; }

    /// <summary>The fraction of the steps after which the ControlNets start to apply (a number, or one per ControlNet).</summary>
    [JsonConverter(typeof(NumberOrListConverter))]
    public double[]? ControlStart { get; init; }

    /// <summary>The fraction of the steps after which the ControlNets stop applying (a number, or one per ControlNet).</summary>
    [JsonConverter(typeof(NumberOrListConverter))]
    public double[]? ControlEnd { get; init; }

    /// <summary>ControlNet guess mode (SD 1.x / 2.x and SDXL ControlNets).</summary>
    public bool? GuessMode { get; init; }

    /// <summary>
    /// The options as the CLI verb of <see cref="Mode"/> has them, with the uploaded images written to files in
    /// <paramref name="uploads"/>; validated by the same checks as the command line. The control images pair with
    /// <paramref name="controlNets"/>, the server's ControlNets: a request without them runs the plain pipeline.
    /// </summary>
    /// <exception cref="ArgumentException">An unknown mode, an image that is not base64, or an option the verb refuses.</exception>
    internal GenerateSettings ToSettings(string model, IReadOnlyList<string> controlNets, string uploads, string? lora = null, double loraScale = 1)
    {
        string? Upload(string? data, string name, string? file = null)
        {
            if (data is null) return null;
            int comma = data.StartsWith("data:", StringComparison.Ordinal) ? data.IndexOf(',') : -1;
            byte[] bytes;
            try { bytes = Convert.FromBase64String(comma >= 0 ? data[(comma + 1)..] : data); }
            catch (FormatException) { throw new ArgumentException($"{name} must be a data URL or base64 of a PNG or JPEG file."); }
            string path = Path.Combine(uploads, file ?? name);
            File.WriteAllBytes(path, bytes);
            return path;
        }
        string[]? controlImages = ControlImages;
        if (ControlImage is not null)
        {
            if (controlImages is not null) throw new ArgumentException("give control_image (one ControlNet) or control_images (one per ControlNet), not both.");
            controlImages = [ControlImage];
        }
        CheckControl(controlImages, controlNets);
        string[]? Numbers(double[]? values) => values?.Select(v => v.ToString("R", CultureInfo.InvariantCulture)).ToArray();
        string[]? controlFiles = controlImages?.Select((data, i) =>
            Upload(data, controlImages.Length == 1 ? "control_image" : $"control_images[{i}]", $"control-{i}")!).ToArray();
        string[]? controlNet = controlFiles is null ? null : [.. controlNets];
        string[]? scale = Numbers(ControlnetScale), start = Numbers(ControlStart), end = Numbers(ControlEnd);
        bool guessMode = GuessMode ?? false;
        string? guidance = Guidance?.ToString("R", CultureInfo.InvariantCulture);
        string? strength = Strength?.ToString("R", CultureInfo.InvariantCulture);
        string? eta = Eta?.ToString("R", CultureInfo.InvariantCulture);
        string? rescale = GuidanceRescale?.ToString("R", CultureInfo.InvariantCulture);
        string? trueCfg = TrueCfg?.ToString("R", CultureInfo.InvariantCulture);
        // The server's LoRA, at the scale this request runs with, for the image's parameters text.
        string loraText = (LoraScale ?? loraScale).ToString("R", CultureInfo.InvariantCulture);
        // Settings are init-only (as the command line fills them): one initializer per verb, the shared options in each.
        if (PaddingMaskCrop is not null && Mode != "inpaint") throw new ArgumentException("padding_mask_crop applies to inpaint only.");
        GenerateSettings settings = Mode switch
        {
            "txt2img" => new GenerateSettings
            {
                Model = model, Prompt = Prompt, Prompt2 = Prompt2, NegativePrompt = NegativePrompt, Steps = Steps, Guidance = guidance, Seed = Seed,
                Width = Width, Height = Height, Scheduler = Scheduler, NumImages = NumImages, PreviewEvery = PreviewEvery, Eta = eta, GuidanceRescale = rescale,
                TrueCfg = trueCfg, Lora = lora, LoraScale = loraText,
                ControlNet = controlNet, ControlImage = controlFiles, ControlNetScale = scale, ControlStart = start, ControlEnd = end, GuessMode = guessMode,
            },
            "img2img" => new Img2ImgSettings
            {
                Model = model, Prompt = Prompt, Prompt2 = Prompt2, NegativePrompt = NegativePrompt, Steps = Steps, Guidance = guidance, Seed = Seed,
                Width = Width, Height = Height, Scheduler = Scheduler, NumImages = NumImages, PreviewEvery = PreviewEvery, Eta = eta, GuidanceRescale = rescale,
                TrueCfg = trueCfg, Lora = lora, LoraScale = loraText,
                ControlNet = controlNet, ControlImage = controlFiles, ControlNetScale = scale, ControlStart = start, ControlEnd = end, GuessMode = guessMode,
                Image = Upload(Image, "image"), Strength = strength,
            },
            "inpaint" => new InpaintSettings
            {
                Model = model, Prompt = Prompt, Prompt2 = Prompt2, NegativePrompt = NegativePrompt, Steps = Steps, Guidance = guidance, Seed = Seed,
                Width = Width, Height = Height, Scheduler = Scheduler, NumImages = NumImages, PreviewEvery = PreviewEvery, Eta = eta, GuidanceRescale = rescale,
                TrueCfg = trueCfg, Lora = lora, LoraScale = loraText,
                ControlNet = controlNet, ControlImage = controlFiles, ControlNetScale = scale, ControlStart = start, ControlEnd = end, GuessMode = guessMode,
                Image = Upload(Image, "image"), Mask = Upload(Mask, "mask"), Strength = strength, PaddingMaskCrop = PaddingMaskCrop,
            },
            _ => throw new ArgumentException($"mode must be txt2img, img2img or inpaint, got '{Mode}'."),
        };
        var result = settings.Validate();
        if (!result.Successful) throw new ArgumentException(WebText.WithoutDashes(result.Message ?? "invalid request"));
        return settings;
    }

    /// <summary>
    /// The ControlNet fields against the server's ControlNets, worded for the API: the command line's own checks (values,
    /// counts of the scales and windows) follow, but they speak of --controlnet, which here is the server's.
    /// </summary>
    private void CheckControl(string[]? controlImages, IReadOnlyList<string> controlNets)
    {
        string? option = controlImages is not null ? "control_image" : ControlnetScale is not null ? "controlnet_scale"
            : ControlStart is not null ? "control_start" : ControlEnd is not null ? "control_end" : GuessMode is true ? "guess_mode" : null;
        if (option is null) return;
        if (controlNets.Count == 0)
            throw new ArgumentException($"{option} needs a ControlNet, and this server has none (start it with serve --controlnet FOLDER_OR_REPO).");
        if (controlImages is null)
            throw new ArgumentException($"{option} needs control_image (or control_images: one per ControlNet of the server).");
        if (controlImages.Length != controlNets.Count)
            throw new ArgumentException($"this server has {controlNets.Count} ControlNet{(controlNets.Count > 1 ? "s" : "")} ({string.Join(", ", controlNets)}): " +
                $"give one control image per ControlNet, in that order; got {controlImages.Length}.");
    }

    /// <summary>Reads a number, or a list of numbers, as a list (a scale for all ControlNets, or one per ControlNet).</summary>
    private sealed class NumberOrListConverter : JsonConverter<double[]>
    {
        public override double[] Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        {
            if (reader.TokenType == JsonTokenType.Number) return [reader.GetDouble()];
            if (reader.TokenType != JsonTokenType.StartArray) throw new JsonException("a number or a list of numbers");
            var values = new List<double>();
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            {
                if (reader.TokenType != JsonTokenType.Number) throw new JsonException("a number or a list of numbers");
                values.Add(reader.GetDouble());
            }
            return [.. values];
        }

        public override void Write(Utf8JsonWriter writer, double[] value, JsonSerializerOptions options) =>
            JsonSerializer.Serialize(writer, value, options);
    }
}
