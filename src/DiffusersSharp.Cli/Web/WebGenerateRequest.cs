using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using DiffusersSharp.Cli.Commands;
using DiffusersSharp.Pipelines.StableDiffusion;

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

    /// <summary>img2img with an InstructPix2Pix model: how closely the edit keeps to the image (image_guidance_scale).</summary>
    public double? ImageGuidance { get; init; }

    /// <summary>img2img with an x4 upscaler: the noise added to the low-resolution image first (noise_level).</summary>
    public int? NoiseLevel { get; init; }

    /// <summary>UNet models: the scheduler short name or class (default: the model's).</summary>
    public string? Scheduler { get; init; }

    /// <summary>UNet models with DDIM or TCD: the step noise (DDIM's eta, TCD's gamma; 0 to 1).</summary>
    public double? Eta { get; init; }

    /// <summary>UNet models: guidance rescale (0 to 1).</summary>
    public double? GuidanceRescale { get; init; }

    /// <summary>UNet models: FreeU's s1, s2, b1, b2 for this request (diffusers' enable_freeu; off when absent).</summary>
    public double[]? Freeu { get; init; }

    /// <summary>SD 1.x / 2.x and SDXL (all modes) and SD3 (txt2img, img2img): Perturbed-Attention Guidance's scale for this
    /// request (diffusers' PAG pipelines' pag_scale; off when absent).</summary>
    public double? PagScale { get; init; }

    /// <summary>With pag_scale: the layers to perturb (pag_applied_layers; default ["mid"], SD3 ["blocks.1"]).</summary>
    public string[]? PagLayers { get; init; }

    /// <summary>With pag_scale: pag_adaptive_scale (default 0).</summary>
    public double? PagAdaptiveScale { get; init; }

    /// <summary>Flux models: the true-CFG scale (above 1, with a negative prompt: a second, negative pass per step).</summary>
    public double? TrueCfg { get; init; }

    /// <summary>Z-Image models: cap each guided prediction's norm at this factor times the conditional one's (diffusers'
    /// cfg_normalization; True is 1, 0 off).</summary>
    public double? CfgNormalization { get; init; }

    /// <summary>Z-Image models: steps whose normalized time is above this run without guidance (diffusers' cfg_truncation).</summary>
    public double? CfgTruncation { get; init; }

    /// <summary>Images to generate.</summary>
    public int NumImages { get; init; } = 1;

    /// <summary>Send a decoded preview every this many steps (none when absent).</summary>
    public int? PreviewEvery { get; init; }

    /// <summary>The starting image (img2img, inpaint): a data URL or base64 PNG / JPEG.</summary>
    public string? Image { get; init; }

    /// <summary>The inpainting mask (white is repainted): a data URL or base64 PNG / JPEG.</summary>
    public string? Mask { get; init; }

    /// <summary>With a server started with --lora: the scale to fuse its LoRAs at for this and later requests, a number
    /// (for all) or a list (one per LoRA, in the server's order); the LoRAs are taken out and fused again when it changes
    /// (diffusers' unfuse_lora, set_adapters(adapter_weights), fuse_lora).</summary>
    [JsonConverter(typeof(NumberOrListConverter))]
    public double[]? LoraScale { get; init; }

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

    /// <summary>With ControlNet-Unions on the server: the control type of each control image (a name such as
    /// <c>canny</c> or an index, or a list in the control images' order). One ControlNet-Union takes several conditions
    /// (a control image and a type each); several take one each.</summary>
    [JsonConverter(typeof(NameOrListConverter))]
    public string[]? ControlMode { get; init; }

    /// <summary>With one T2I-Adapter on the server (txt2img): its condition image, a data URL or base64.</summary>
    public string? AdapterImage { get; init; }

    /// <summary>One condition image per T2I-Adapter of the server, in its order (instead of <see cref="AdapterImage"/>).</summary>
    public string[]? AdapterImages { get; init; }

    /// <summary>T2I-Adapter conditioning scale: one number for all adapters, or one per adapter.</summary>
    [JsonConverter(typeof(NumberOrListConverter))]
    public double[]? AdapterScale { get; init; }

    /// <summary>SDXL T2I-Adapters: the fraction of the steps they steer, in [0, 1].</summary>
    public double? AdapterFactor { get; init; }

    /// <summary>With an IP-Adapter on the server (serve --ip-adapter): the image prompt, a data URL or base64.</summary>
    public string? IpAdapterImage { get; init; }

    /// <summary>The IP-Adapter scale for this request (default: the pipeline's, 1.0; SD3 0.5).</summary>
    public double? IpAdapterScale { get; init; }

    /// <summary>With a FLUX.1-Redux prior on the server (serve --redux): the image prompt to vary, a data URL or base64.</summary>
    public string? ReduxImage { get; init; }

    /// <summary>Several Redux images (instead of <see cref="ReduxImage"/>), whose embeddings are weighted by the scales and summed.</summary>
    public string[]? ReduxImages { get; init; }

    /// <summary>The weight of each Redux image's text + image tokens (diffusers' prompt_embeds_scale, default 1): a number for
    /// all images, or one per image.</summary>
    [JsonConverter(typeof(NumberOrListConverter))]
    public double[]? ReduxScale { get; init; }

    /// <summary>The weight of each Redux image's pooled embedding (diffusers' pooled_prompt_embeds_scale, default 1): a number
    /// for all images, or one per image.</summary>
    [JsonConverter(typeof(NumberOrListConverter))]
    public double[]? ReduxPooledScale { get; init; }

    /// <summary>
    /// The options as the CLI verb of <see cref="Mode"/> has them, with the uploaded images written to files in
    /// <paramref name="uploads"/>; validated by the same checks as the command line. The control images pair with
    /// <paramref name="server"/>'s ControlNets (one each, or several conditions for one ControlNet-Union), the adapter
    /// images with its T2I-Adapters: a request without them runs the plain pipeline.
    /// </summary>
    /// <exception cref="ArgumentException">An unknown mode, an image that is not base64, or an option the verb refuses.</exception>
    internal GenerateSettings ToSettings(string model, ServerModels server, string uploads, IReadOnlyList<(string File, double Scale)>? loras = null)
    {
        var controlNets = server.ControlNets;
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
        CheckControl(controlImages, server);
        string[]? adapterImages = AdapterImages;
        if (AdapterImage is not null)
        {
            if (adapterImages is not null) throw new ArgumentException("give adapter_image (one T2I-Adapter) or adapter_images (one per T2I-Adapter), not both.");
            adapterImages = [AdapterImage];
        }
        CheckAdapters(adapterImages, server.Adapters);
        if ((IpAdapterImage is not null || IpAdapterScale is not null) && server.IpAdapter is null)
            throw new ArgumentException($"{(IpAdapterImage is not null ? "ip_adapter_image" : "ip_adapter_scale")} needs an IP-Adapter, and this server has none (start it with serve --ip-adapter FILE).");
        if (IpAdapterScale is not null && IpAdapterImage is null) throw new ArgumentException("ip_adapter_scale needs ip_adapter_image.");
        string? ipAdapterImage = Upload(IpAdapterImage, "ip_adapter_image", "ip-adapter-image");
        // The server's IP-Adapter is named again, as --lora is, so the option checks see it; it is not loaded again.
        string? ipAdapter = ipAdapterImage is null ? null : server.IpAdapter, ipAdapterEncoder = ipAdapterImage is null ? null : server.IpAdapterImageEncoder;
        string? ipAdapterScale = IpAdapterScale?.ToString("R", CultureInfo.InvariantCulture);
        string[]? reduxImages = ReduxImages;
        if (ReduxImage is not null)
        {
            if (reduxImages is not null) throw new ArgumentException("give redux_image (one image) or redux_images (a list), not both.");
            reduxImages = [ReduxImage];
        }
        string? reduxField = reduxImages is not null ? "redux_image" : ReduxScale is not null ? "redux_scale" : ReduxPooledScale is not null ? "redux_pooled_scale" : null;
        if (reduxField is not null && server.Redux is null)
            throw new ArgumentException($"{reduxField} needs a FLUX.1-Redux prior, and this server has none (start it with serve --redux FOLDER_OR_REPO; FLUX.1 models).");
        if (reduxImages is null && reduxField is not null) throw new ArgumentException($"{reduxField} needs redux_image (or redux_images).");
        if (reduxImages is { Length: 0 }) throw new ArgumentException("redux_images is empty: give at least one image (or leave it out to run without the image prompt).");
        string[]? reduxFiles = reduxImages?.Select((data, i) =>
            Upload(data, reduxImages.Length == 1 ? "redux_image" : $"redux_images[{i}]", reduxImages.Length == 1 ? "redux-image" : $"redux-image-{i + 1}")!).ToArray();
        // The server's prior is named again, as --ip-adapter is, so the option checks see it; it is not loaded again.
        string? redux = reduxFiles is null ? null : server.Redux;
        string[]? Numbers(double[]? values) => values?.Select(v => v.ToString("R", CultureInfo.InvariantCulture)).ToArray();
        string[]? controlFiles = controlImages?.Select((data, i) =>
            Upload(data, controlImages.Length == 1 ? "control_image" : $"control_images[{i}]", $"control-{i}")!).ToArray();
        string[]? controlNet = controlFiles is null || server.TakesControlImage ? null : [.. controlNets];
        string[]? controlMode = controlFiles is null ? null : ControlMode;
        string[]? adapterFiles = adapterImages?.Select((data, i) =>
            Upload(data, adapterImages.Length == 1 ? "adapter_image" : $"adapter_images[{i}]", $"adapter-{i}")!).ToArray();
        string[]? adapter = adapterFiles is null ? null : [.. server.Adapters];
        string[]? adapterScale = adapterFiles is null ? null : Numbers(AdapterScale);
        string? adapterFactor = adapterFiles is null ? null : AdapterFactor?.ToString("R", CultureInfo.InvariantCulture);
        string[]? scale = Numbers(ControlnetScale), start = Numbers(ControlStart), end = Numbers(ControlEnd);
        bool guessMode = GuessMode ?? false;
        string? guidance = Guidance?.ToString("R", CultureInfo.InvariantCulture);
        string? strength = Strength?.ToString("R", CultureInfo.InvariantCulture);
        string? eta = Eta?.ToString("R", CultureInfo.InvariantCulture);
        string? rescale = GuidanceRescale?.ToString("R", CultureInfo.InvariantCulture);
        string? freeU = Freeu is null ? null : string.Join(",", Numbers(Freeu)!);
        string? trueCfg = TrueCfg?.ToString("R", CultureInfo.InvariantCulture);
        string? cfgNormalization = CfgNormalization?.ToString("R", CultureInfo.InvariantCulture);
        string? cfgTruncation = CfgTruncation?.ToString("R", CultureInfo.InvariantCulture);
        // The server's LoRAs, at the scales this request runs with, for the image's parameters text.
        string[]? lora = loras is { Count: > 0 } ? loras.Select(l => l.File).ToArray() : null;
        string[]? loraText = lora is null ? null
            : Numbers(LoraScale is { } wanted ? loras!.Select((_, i) => wanted[wanted.Length == 1 ? 0 : i]).ToArray() : loras!.Select(l => l.Scale).ToArray());
        // Settings are init-only (as the command line fills them): one initializer per verb, the shared options in each.
        if (PaddingMaskCrop is not null && Mode != "inpaint") throw new ArgumentException("padding_mask_crop applies to inpaint only.");
        if (ImageGuidance is not null && Mode != "img2img") throw new ArgumentException("image_guidance applies to img2img with an InstructPix2Pix model.");
        if (NoiseLevel is not null && Mode != "img2img") throw new ArgumentException("noise_level applies to img2img with an x4 upscaler.");
        // (the modes that take PAG are checked against the model before: WebServer.CheckMode)
        if (PagLayers is { } layers && layers.Any(l => l is null || l.Contains(',')))
            throw new ArgumentException("pag_layers takes a list of layer names (regular expressions without commas), e.g. [\"mid\", \"down_blocks.1\"].");
        string? pagScale = PagScale?.ToString("R", CultureInfo.InvariantCulture), pagLayers = PagLayers is null ? null : string.Join(",", PagLayers);
        string? pagAdaptive = PagAdaptiveScale?.ToString("R", CultureInfo.InvariantCulture);
        GenerateSettings settings = Mode switch
        {
            "txt2img" => new GenerateSettings
            {
                Model = model, Prompt = Prompt, Prompt2 = Prompt2, NegativePrompt = NegativePrompt, Steps = Steps, Guidance = guidance, Seed = Seed,
                Width = Width, Height = Height, Scheduler = Scheduler, NumImages = NumImages, PreviewEvery = PreviewEvery, Eta = eta, GuidanceRescale = rescale, FreeU = freeU,
                TrueCfg = trueCfg, CfgNormalization = cfgNormalization, CfgTruncation = cfgTruncation,
                Lora = lora, LoraScale = loraText, IpAdapter = ipAdapter, IpAdapterImageEncoder = ipAdapterEncoder,
                IpAdapterImage = ipAdapterImage, IpAdapterScale = ipAdapterScale,
                Redux = redux, ReduxImage = reduxFiles, ReduxScale = Numbers(ReduxScale), ReduxPooledScale = Numbers(ReduxPooledScale),
                ControlNet = controlNet, ControlImage = controlFiles, ControlNetScale = scale, ControlStart = start, ControlEnd = end, GuessMode = guessMode,
                ControlMode = controlMode, Adapter = adapter, AdapterImage = adapterFiles, AdapterScale = adapterScale, AdapterFactor = adapterFactor,
                PagScale = pagScale, PagLayers = pagLayers, PagAdaptiveScale = pagAdaptive,
            },
            "img2img" => new Img2ImgSettings
            {
                Model = model, Prompt = Prompt, Prompt2 = Prompt2, NegativePrompt = NegativePrompt, Steps = Steps, Guidance = guidance, Seed = Seed,
                Width = Width, Height = Height, Scheduler = Scheduler, NumImages = NumImages, PreviewEvery = PreviewEvery, Eta = eta, GuidanceRescale = rescale, FreeU = freeU,
                TrueCfg = trueCfg, CfgNormalization = cfgNormalization, CfgTruncation = cfgTruncation,
                Lora = lora, LoraScale = loraText, IpAdapter = ipAdapter, IpAdapterImageEncoder = ipAdapterEncoder,
                IpAdapterImage = ipAdapterImage, IpAdapterScale = ipAdapterScale,
                Redux = redux, ReduxImage = reduxFiles, ReduxScale = Numbers(ReduxScale), ReduxPooledScale = Numbers(ReduxPooledScale),
                ControlNet = controlNet, ControlImage = controlFiles, ControlNetScale = scale, ControlStart = start, ControlEnd = end, GuessMode = guessMode,
                ControlMode = controlMode, Image = Upload(Image, "image"), Strength = strength,
                ImageGuidance = ImageGuidance?.ToString("R", CultureInfo.InvariantCulture), NoiseLevel = NoiseLevel,
                PagScale = pagScale, PagLayers = pagLayers, PagAdaptiveScale = pagAdaptive,
            },
            "inpaint" => new InpaintSettings
            {
                Model = model, Prompt = Prompt, Prompt2 = Prompt2, NegativePrompt = NegativePrompt, Steps = Steps, Guidance = guidance, Seed = Seed,
                Width = Width, Height = Height, Scheduler = Scheduler, NumImages = NumImages, PreviewEvery = PreviewEvery, Eta = eta, GuidanceRescale = rescale, FreeU = freeU,
                TrueCfg = trueCfg, CfgNormalization = cfgNormalization, CfgTruncation = cfgTruncation,
                Lora = lora, LoraScale = loraText, IpAdapter = ipAdapter, IpAdapterImageEncoder = ipAdapterEncoder,
                IpAdapterImage = ipAdapterImage, IpAdapterScale = ipAdapterScale,
                Redux = redux, ReduxImage = reduxFiles, ReduxScale = Numbers(ReduxScale), ReduxPooledScale = Numbers(ReduxPooledScale),
                ControlNet = controlNet, ControlImage = controlFiles, ControlNetScale = scale, ControlStart = start, ControlEnd = end, GuessMode = guessMode,
                ControlMode = controlMode, Image = Upload(Image, "image"), Mask = Upload(Mask, "mask"), Strength = strength, PaddingMaskCrop = PaddingMaskCrop,
                PagScale = pagScale, PagLayers = pagLayers, PagAdaptiveScale = pagAdaptive,
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
    private void CheckControl(string[]? controlImages, ServerModels server)
    {
        var controlNets = server.ControlNets;
        string? setting = ControlnetScale is not null ? "controlnet_scale" : ControlStart is not null ? "control_start"
            : ControlEnd is not null ? "control_end" : GuessMode is true ? "guess_mode" : ControlMode is not null ? "control_mode" : null;
        string? option = controlImages is not null ? "control_image" : setting;
        if (server.TakesControlImage)
        {
            // A FLUX.1 control model: one control image, every request (diffusers' FluxControl pipelines need it).
            if (controlImages is not { Length: 1 })
                throw new ArgumentException("this server's model is a FLUX.1 control model (FLUX.1-Canny-dev, Depth-dev): give its control image (Canny edges or a depth map), once, with control_image.");
            if (setting is not null)
                throw new ArgumentException($"{setting} applies to ControlNets; this server's model takes its control image alone.");
            return;
        }
        if (option is null) return;
        if (controlNets.Count == 0)
            throw new ArgumentException($"{option} needs a ControlNet, and this server has none (start it with serve --controlnet FOLDER_OR_REPO).");
        if (controlImages is null)
            throw new ArgumentException($"{option} needs control_image (or control_images: one per ControlNet of the server).");
        bool unions = server.ControlNetUnionTypes.Any(types => types is not null);
        if (ControlMode is not null && !unions)
            throw new ArgumentException($"control_mode applies to ControlNet-Union models; this server's ControlNets ({string.Join(", ", controlNets)}) are plain ControlNets.");
        if (unions && ControlMode is null)
            throw new ArgumentException($"this server's ControlNet{(controlNets.Count > 1 ? "s are ControlNet-Unions" : " is a ControlNet-Union")}: give the control type of each control image with control_mode " +
                $"({string.Join(", ", ControlNetUnionMode.Names.Select(kv => $"{kv.Key} {kv.Value}"))}).");
        // One ControlNet-Union fuses several conditions (control_mode pairs with them); otherwise one image per ControlNet.
        if (unions && controlNets.Count == 1) return;
        if (controlImages.Length != controlNets.Count)
            throw new ArgumentException($"this server has {controlNets.Count} ControlNet{(controlNets.Count > 1 ? "s" : "")} ({string.Join(", ", controlNets)}): " +
                $"give one control image per ControlNet, in that order; got {controlImages.Length}.");
    }

    /// <summary>The T2I-Adapter fields against the server's adapters, worded for the API (the command line's checks follow).</summary>
    private void CheckAdapters(string[]? adapterImages, IReadOnlyList<string> adapters)
    {
        string? option = adapterImages is not null ? "adapter_image" : AdapterScale is not null ? "adapter_scale" : AdapterFactor is not null ? "adapter_factor" : null;
        if (option is null) return;
        if (adapters.Count == 0)
            throw new ArgumentException($"{option} needs a T2I-Adapter, and this server has none (start it with serve --adapter FOLDER_OR_REPO).");
        if (Mode != "txt2img")
            throw new ArgumentException($"{option} applies to txt2img only (diffusers' T2I-Adapter pipelines are text-to-image); got mode {Mode}.");
        if (adapterImages is null)
            throw new ArgumentException($"{option} needs adapter_image (or adapter_images: one per T2I-Adapter of the server).");
        if (adapterImages.Length != adapters.Count)
            throw new ArgumentException($"this server has {adapters.Count} T2I-Adapter{(adapters.Count > 1 ? "s" : "")} ({string.Join(", ", adapters)}): " +
                $"give one adapter image per adapter, in that order; got {adapterImages.Length}.");
    }

    /// <summary>Reads a name or number, or a list of them, as a list of strings (control types by name or index).</summary>
    private sealed class NameOrListConverter : JsonConverter<string[]>
    {
        public override string[] Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        {
            static string One(ref Utf8JsonReader r) => r.TokenType switch
            {
                JsonTokenType.String => r.GetString()!,
                JsonTokenType.Number when r.TryGetInt64(out long index) => index.ToString(CultureInfo.InvariantCulture),
                _ => throw new JsonException("a name, a number, or a list of them"),
            };
            if (reader.TokenType != JsonTokenType.StartArray) return [One(ref reader)];
            var values = new List<string>();
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray) values.Add(One(ref reader));
            return [.. values];
        }

        public override void Write(Utf8JsonWriter writer, string[] value, JsonSerializerOptions options) =>
            JsonSerializer.Serialize(writer, value, options);
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

/// <summary>What the server loaded beside its model, which a request's control and adapter images pair with.</summary>
/// <param name="ControlNets">The ControlNets (serve --controlnet), in order.</param>
/// <param name="ControlNetUnionTypes">Per ControlNet: its number of control types if it is a ControlNet-Union, else null.</param>
/// <param name="Adapters">The T2I-Adapters (serve --adapter), in order.</param>
/// <param name="TakesControlImage">Whether the model itself takes a control image (a FLUX.1 control model: FLUX.1-Canny-dev, Depth-dev).</param>
/// <param name="IpAdapter">The server's IP-Adapter (serve --ip-adapter, as given), or null.</param>
/// <param name="IpAdapterImageEncoder">Its --ip-adapter-image-encoder, or null.</param>
/// <param name="Redux">The server's FLUX.1-Redux prior (serve --redux, as given), or null.</param>
internal sealed record ServerModels(IReadOnlyList<string> ControlNets, IReadOnlyList<int?> ControlNetUnionTypes, IReadOnlyList<string> Adapters,
    bool TakesControlImage = false, string? IpAdapter = null, string? IpAdapterImageEncoder = null, string? Redux = null);
