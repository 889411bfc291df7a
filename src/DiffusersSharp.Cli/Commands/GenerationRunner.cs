using System.Globalization;
using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Pipelines.PixArt;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Runtime;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Cli.Commands;

/// <summary>The images of one generation and the parameters text that goes with them (a PNG's "parameters" chunk).</summary>
internal sealed record Generated(IReadOnlyList<ImageBuffer> Images, string Parameters);

/// <summary>What <c>generate</c>, <c>img2img</c>, <c>inpaint</c> and the web UI share: the request from the options, the
/// run of the verb's pipeline in the model's family, the parameters text, writing the images.</summary>
internal sealed partial class GenerationRunner(CliOutput output, GenerateSettings settings) : IDisposable
{
    private readonly List<IDisposable> _owned = [];

    /// <summary>
    /// The flow of the three verbs: load the model (its family from model_index.json; options checked against it before
    /// any weights load), generate, write the images (and the step previews of --preview-every). The options were
    /// validated before this runs.
    /// </summary>
    public static int Run(CliOutput output, GenerateSettings settings, VerbPipelines pipelines, CancellationToken ct)
    {
        using var model = LoadedModel.Load(output, settings, ct);
        using var runner = new GenerationRunner(output, settings);
        var preview = settings.PreviewEvery is { } every ? new PreviewSink(every, runner.WritePreview) : null;
        var generated = runner.Generate(model, pipelines, ConsoleProgress.ForStderr(output.Error), preview, ct);
        runner.Write(generated);
        return ExitCodes.Ok;
    }

    /// <summary>The seed of this generation (--seed, or a random one that goes into the parameters).</summary>
    public long Seed { get; } = settings.Seed ?? Random.Shared.NextInt64(0, 1L << 53);

    /// <summary>Runs the verb's pipeline of <paramref name="model"/>'s family with the options' request.</summary>
    public Generated Generate(LoadedModel model, VerbPipelines pipelines, IProgress<PipelineProgress>? progress, PreviewSink? preview,
        CancellationToken ct)
    {
        string verb = pipelines.Verb;
        model.CheckOptions(settings);
        var hooks = new RunHooks(OnTruncated, progress, preview, settings.Scheduler);
        if (model.UNet is { } unet)
        {
            model.RestoreScheduler();
            unet.Unet.SetFreeU(settings.FreeUValue); // as pipe.enable_freeu / disable_freeu before the call (serve: per request)
            var request = FillUNet(pipelines.UNetRequest(model.PipelineClass));
            var (result, guidance, strength) = pipelines.RunUNet(unet, request, hooks, ct);
            using (result)
                return new Generated(result.Images!, Parameters(verb, settings.Steps ?? (request is StableDiffusionInstructPix2PixRequest ? 100 : request is ILatentConsistencyRequest ? 4
                    : request is StableDiffusionUpscaleRequest or StableDiffusionLatentUpscaleRequest ? 75 : pipelines.UNetDefaultSteps), model.Name,
                    unet.SchedulerClassName.Replace("Scheduler", ""), guidance, strength, unet.IsXL, noiseLevel: (request as StableDiffusionUpscaleRequest)?.NoiseLevel));
        }
        if (model.Flux is { } flux)
        {
            var fluxRequest = FillFlux(pipelines.FluxRequest(model.PipelineClass)); // FluxControlPipeline for FLUX.1-dev with a control LoRA
            if (settings.Redux is not null) fluxRequest = WithRedux(fluxRequest, model, flux, ct);
            using var fluxResult = pipelines.RunFlux(flux, fluxRequest, hooks, ct);
            int defaultSteps = fluxRequest is FluxFillRequest ? FluxFillPipeline.DefaultFillSteps : FluxPipelineBase.DefaultSteps;
            return new Generated(fluxResult.Images!, Parameters(verb, settings.Steps ?? defaultSteps, model.Name, "FlowMatchEulerDiscrete",
                fluxRequest.GuidanceScale, (fluxRequest as FluxImg2ImgRequest)?.Strength, controlNetScale: 1.0));
        }
        if (model.Chroma is { } chroma) return GenerateChroma(model, chroma, pipelines.Verb, progress, preview, ct);
        if (model.ZImage is { } zImage) return GenerateZImage(model, zImage, pipelines.Verb, progress, preview, ct);
        if (model.QwenImage is { } qwenImage) return GenerateQwenImage(model, qwenImage, pipelines.Verb, progress, preview, ct);
        if (model.Flux2Klein is { } klein) return GenerateFlux2Klein(model, klein, pipelines.Verb, progress, preview, ct);
        if (model.Sana is { } sana) return GenerateSana(model, sana, pipelines.Verb, progress, preview, ct);
        if (model.Lumina2 is { } lumina2) return GenerateLumina2(model, lumina2, pipelines.Verb, progress, preview, ct);
        if (model.AuraFlow is { } auraFlow) return GenerateAuraFlow(model, auraFlow, pipelines.Verb, progress, preview, ct);
        if (model.CogView4 is { } cogView4) return GenerateCogView4(model, cogView4, pipelines.Verb, progress, preview, ct);
        if (model.PixArt is { } pixArt)
        {
            // As pipe.scheduler = X.from_config(pipe.scheduler.config) on the model's own scheduler.
            model.RestoreScheduler();
            if (settings.Scheduler is { } scheduler) pixArt.UseScheduler(scheduler);
            var pixArtRequest = new PixArtRequest
            {
                Prompt = settings.Prompt is null ? null : (PromptList?)settings.Prompt,
                NegativePrompt = settings.NegativePrompt is null ? null : (PromptList?)settings.NegativePrompt,
                Height = settings.Height,
                Width = settings.Width,
                NumInferenceSteps = settings.Steps ?? 20,
                GuidanceScale = settings.GuidanceScale ?? 4.5,
                Eta = settings.EtaValue ?? 0,
                NumImagesPerPrompt = settings.NumImages,
                Generator = Track(new Generator(settings.GeneratorDevice).ManualSeed(Seed)),
                MaxSequenceLength = settings.MaxSequenceLength,
                UseResolutionBinning = !settings.NoResolutionBinning,
                OutputType = OutputType.Image,
            };
            using PixArtPipelineBase pipe = model.PipelineClass == PixArtComponents.AlphaPipelineClass ? new PixArtAlphaPipeline(pixArt) : new PixArtSigmaPipeline(pixArt);
            pipe.OnPromptTruncated = OnTruncated;
            if (preview is not null)
                pixArtRequest = pixArtRequest with { CallbackOnStepEnd = VerbPipelines.Previews(preview, latents => pipe.PreviewImages(latents, pixArtRequest)) };
            using var pixArtResult = pipe.Generate(pixArtRequest, progress, ct);
            return new Generated(pixArtResult.Images!, Parameters(verb, pixArtRequest.NumInferenceSteps, model.Name,
                pixArt.SchedulerClassName.Replace("Scheduler", ""), pixArtRequest.GuidanceScale, null));
        }
        var sd3Request = Fill(pipelines.Sd3Request());
        using var sd3Result = pipelines.RunSd3(model.Sd3!, sd3Request, hooks, ct);
        return new Generated(sd3Result.Images!, Parameters(verb, settings.Steps ?? pipelines.Sd3DefaultSteps, model.Name, "FlowMatchEulerDiscrete",
            sd3Request.GuidanceScale, (sd3Request as StableDiffusion3Img2ImgRequest)?.Strength, sd3: true));
    }

    private Action<string, int, int> OnTruncated => (tokenizer, length, limit) =>
        output.Error.WriteLine($"warning: the prompt is {length} tokens for {tokenizer}; only {limit} are used.");

    /// <summary>Fills the request fields common to the three verbs (UNet pipelines).</summary>
    private T FillUNet<T>(T request) where T : StableDiffusionRequest
    {
        var generator = Track(new Generator(settings.GeneratorDevice).ManualSeed(Seed));
        request = request with
        {
            Prompt = settings.Prompt is null ? null : (PromptList?)settings.Prompt,
            Prompt2 = settings.Prompt2 is null ? null : (PromptList?)settings.Prompt2,
            NegativePrompt = settings.NegativePrompt is null ? null : (PromptList?)settings.NegativePrompt,
            Height = settings.Height,
            Width = settings.Width,
            NumInferenceSteps = settings.Steps,
            GuidanceScale = settings.GuidanceScale,
            NumImagesPerPrompt = settings.NumImages,
            Generator = generator,
            ClipSkip = settings.ClipSkip,
            Eta = settings.EtaValue ?? 0,
            GuidanceRescale = settings.GuidanceRescaleValue ?? 0,
            OutputType = OutputType.Image,
        };
        if (settings.IpAdapterImage is { } ipImage)
            request = request with { IpAdapterImage = [ImageFile.LoadRgb(ipImage)], IpAdapterScale = settings.IpAdapterScaleValue };
        if (ReadPromptEmbeds(pooledRequired: false) is { } e)
            request = request with
            {
                PromptEmbeds = e.Embeds, PooledPromptEmbeds = e.Pooled, NegativePromptEmbeds = e.NegativeEmbeds, NegativePooledPromptEmbeds = e.NegativePooled,
            };
        return request;
    }

    /// <summary>The tensors of --prompt-embeds (owned by the runner), or null without the option.</summary>
    private (Tensor Embeds, Tensor? Pooled, Tensor? NegativeEmbeds, Tensor? NegativePooled)? ReadPromptEmbeds(bool pooledRequired)
    {
        if (settings.PromptEmbeds is not { } file) return null;
        using var weights = SafetensorsFile.Open(file);
        Tensor? Get(string key) => weights.Tensors.ContainsKey(key) ? Track(weights.Read(key).clone()) : null;
        var embeds = Get("prompt_embeds") ?? throw new InvalidDataException($"{file} has no 'prompt_embeds' tensor.");
        var pooled = Get("pooled_prompt_embeds");
        if (pooledRequired && pooled is null) throw new InvalidDataException($"{file} has no 'pooled_prompt_embeds' tensor.");
        return (embeds, pooled, Get("negative_prompt_embeds"), Get("negative_pooled_prompt_embeds"));
    }

    /// <summary>Fills the request fields common to the three verbs.</summary>
    private T Fill<T>(T request) where T : StableDiffusion3Request
    {
        var generator = Track(new Generator(settings.GeneratorDevice).ManualSeed(Seed));
        request = request with
        {
            Prompt = settings.Prompt is null ? null : (PromptList?)settings.Prompt,
            Prompt2 = settings.Prompt2 is null ? null : (PromptList?)settings.Prompt2,
            Prompt3 = settings.Prompt3 is null ? null : (PromptList?)settings.Prompt3,
            NegativePrompt = settings.NegativePrompt is null ? null : (PromptList?)settings.NegativePrompt,
            Height = settings.Height,
            Width = settings.Width,
            NumInferenceSteps = settings.Steps,
            GuidanceScale = settings.GuidanceScale ?? 7.0,
            NumImagesPerPrompt = settings.NumImages,
            Generator = generator,
            ClipSkip = settings.ClipSkip,
            MaxSequenceLength = settings.MaxSequenceLength ?? 256,
            SkipGuidanceLayers = settings.SkipLayerList,
            OutputType = OutputType.Image,
        };
        if (settings.IpAdapterImage is { } sd3IpImage)
            request = request with { IpAdapterImage = ImageFile.LoadRgb(sd3IpImage), IpAdapterScale = settings.IpAdapterScaleValue };
        // diffusers draws the control images' VAE samples from torch's global generator: the seed seeds it too, as
        // torch.manual_seed(seed) would.
        if (request is StableDiffusion3ControlNetRequest control)
            request = (T)(object)(control with { ControlImageGenerator = Track(new Generator(settings.GeneratorDevice).ManualSeed(Seed)) });
        // Kontext's output is max_area pixels at the requested aspect ratio: --width and --height ask for that size.
        if (request is FluxKontextRequest kontext && settings.Width is int w && settings.Height is int h)
            request = (T)(object)(kontext with { MaxArea = w * h });
        if (ReadPromptEmbeds(pooledRequired: true) is { } e)
            request = request with
            {
                PromptEmbeds = e.Embeds, PooledPromptEmbeds = e.Pooled, NegativePromptEmbeds = e.NegativeEmbeds, NegativePooledPromptEmbeds = e.NegativePooled,
            };
        return request;
    }

    /// <summary>Fills the request fields common to the three verbs (Flux); the guidance scale defaults to the verb's request's.</summary>
    private T FillFlux<T>(T request) where T : FluxRequest
    {
        var generator = Track(new Generator(settings.GeneratorDevice).ManualSeed(Seed));
        request = request with
        {
            Prompt = settings.Prompt is null ? null : (PromptList?)settings.Prompt,
            Prompt2 = settings.Prompt2 is null ? null : (PromptList?)settings.Prompt2,
            NegativePrompt = settings.NegativePrompt is null ? null : (PromptList?)settings.NegativePrompt,
            TrueCfgScale = settings.TrueCfgScale ?? 1.0,
            Height = settings.Height,
            Width = settings.Width,
            NumInferenceSteps = settings.Steps,
            GuidanceScale = settings.GuidanceScale ?? request.GuidanceScale,
            NumImagesPerPrompt = settings.NumImages,
            Generator = generator,
            MaxSequenceLength = settings.MaxSequenceLength ?? 512,
            OutputType = OutputType.Image,
        };
        if (settings.IpAdapterImage is { } ipImage)
            request = request with { IpAdapterImage = [ImageFile.LoadRgb(ipImage)], IpAdapterScale = settings.IpAdapterScaleValue };
        // diffusers draws the control images' VAE samples from torch's global generator: the seed seeds it too, as
        // torch.manual_seed(seed) would.
        if (request is StableDiffusion3ControlNetRequest control)
            request = (T)(object)(control with { ControlImageGenerator = Track(new Generator(settings.GeneratorDevice).ManualSeed(Seed)) });
        // Kontext's output is max_area pixels at the requested aspect ratio: --width and --height ask for that size.
        if (request is FluxKontextRequest kontext && settings.Width is int w && settings.Height is int h)
            request = (T)(object)(kontext with { MaxArea = w * h });
        if (ReadPromptEmbeds(pooledRequired: true) is { } e)
            request = request with
            {
                PromptEmbeds = e.Embeds, PooledPromptEmbeds = e.Pooled, NegativePromptEmbeds = e.NegativeEmbeds, NegativePooledPromptEmbeds = e.NegativePooled,
            };
        return request;
    }

    /// <summary>
    /// Runs the --redux prior on the --redux-image files (with --prompt / --prompt-2 encoded by the model's text encoders
    /// inside it, else its zero text part) and puts its output into <paramref name="request"/> in place of the prompt, as
    /// diffusers' <c>pipe(**pipe_prior_output)</c>. generate loads the prior for the run and frees it before the Flux run;
    /// serve's prior (<see cref="LoadedModel.ReduxPrior"/>, loaded with the text encoders) is kept.
    /// </summary>
    private T WithRedux<T>(T request, LoadedModel model, FluxComponents flux, CancellationToken ct) where T : FluxRequest
    {
        var images = settings.ReduxImage!.Select(ImageFile.LoadRgb).ToArray();
        static OneOrMany<double> Scale(double[]? values) => values is null ? 1.0 : values.Length == 1 ? values[0] : values;
        FluxPriorReduxPipeline? loaded = null;
        if (model.ReduxPrior is null)
        {
            var load = model.ReduxLoader ?? throw new InvalidOperationException("--redux was not loaded with the model.");
            output.Error.WriteLine($"loading {settings.Redux} (FLUX.1-Redux prior)");
            loaded = load(settings.Prompt is null ? null : flux, ct);
        }
        var prior = model.ReduxPrior ?? loaded!;
        FluxPriorReduxOutput conditioning;
        try
        {
            prior.OnPromptTruncated = OnTruncated;
            conditioning = Track(prior.Generate(new FluxPriorReduxRequest
            {
                Images = images,
                Prompt = settings.Prompt is null ? null : (PromptList?)settings.Prompt,
                Prompt2 = settings.Prompt2 is null ? null : (PromptList?)settings.Prompt2,
                PromptEmbedsScale = Scale(settings.ReduxScaleValues),
                PooledPromptEmbedsScale = Scale(settings.ReduxPooledScaleValues),
            }, ct));
        }
        finally
        {
            prior.OnPromptTruncated = null;
            loaded?.Dispose();
        }
        return request with { Prompt = null, Prompt2 = null, PromptEmbeds = conditioning.PromptEmbeds, PooledPromptEmbeds = conditioning.PooledPromptEmbeds };
    }

    private T Track<T>(T item) where T : IDisposable
    {
        _owned.Add(item);
        return item;
    }

    /// <summary>Writes the images atomically (out.png, or out-1.png ... out-N.png) with the parameters in a PNG text chunk.</summary>
    private void Write(Generated generated)
    {
        var images = generated.Images;
        for (int i = 0; i < images.Count; i++)
        {
            string path = images.Count == 1 ? settings.Output : NumberedPath(settings.Output, i + 1);
            ImageFile.Save(images[i], path, new Dictionary<string, string> { [PngText.ParametersKeyword] = generated.Parameters });
            output.Out.WriteLine(Path.GetFullPath(path));
        }
    }

    /// <summary>Writes the previews after <paramref name="step"/> steps as out.step-K.png (out-N.step-K.png for several images), atomically.</summary>
    private void WritePreview(int step, IReadOnlyList<ImageBuffer> images)
    {
        for (int i = 0; i < images.Count; i++)
        {
            string path = images.Count == 1 ? settings.Output : NumberedPath(settings.Output, i + 1);
            path = Path.Combine(Path.GetDirectoryName(path) ?? "", $"{Path.GetFileNameWithoutExtension(path)}.step-{step}{Path.GetExtension(path)}");
            ImageFile.Save(images[i], path);
            output.Error.WriteLine($"preview {Path.GetFullPath(path)}");
        }
    }

    private string Parameters(string verb, int steps, string model, string sampler, double guidance, double? strength, bool xl = false,
        double? controlNetScale = null, int? noiseLevel = null, bool sd3 = false)
    {
        var inv = CultureInfo.InvariantCulture;
        var lines = new List<string> { settings.Prompt ?? "" };
        if (settings.NegativePrompt is not null) lines.Add($"Negative prompt: {settings.NegativePrompt}");
        var fields = new List<string>
        {
            $"Steps: {steps}", $"Sampler: {sampler}", $"CFG scale: {guidance.ToString(inv)}",
            $"Seed: {Seed}", $"Generator: {settings.GeneratorDevice}", $"Model: {model}", $"Dtype: {settings.Dtype}", $"Mode: {verb}",
        };
        if (settings.Width is not null || settings.Height is not null) fields.Add($"Size: {settings.Width}x{settings.Height}");
        if (strength is { } denoise) fields.Add($"Denoising strength: {denoise.ToString(inv)}");
        if (settings is InpaintSettings { PaddingMaskCrop: { } pad }) fields.Add($"Mask crop padding: {pad}");
        // diffusers' default conditioning scale per pipeline (the UNet ones; Flux's are all 1.0).
        double defaultScale = controlNetScale ?? verb switch { "img2img" => 0.8, "inpaint" => xl ? 1.0 : 0.5, _ => 1.0 };
        if (settings.SkipLayers is not null) fields.Add($"Skip layers: {settings.SkipLayers}");
        if (settings.TrueCfg is not null) fields.Add($"True CFG scale: {settings.TrueCfgScale!.Value.ToString(inv)}");
        if (settings.CfgNormalization is not null) fields.Add($"CFG normalization: {settings.CfgNormalizationValue!.Value.ToString(inv)}");
        if (settings.CfgTruncation is not null) fields.Add($"CFG truncation: {settings.CfgTruncationValue!.Value.ToString(inv)}");
        if (settings.Eta is not null) fields.Add($"Eta: {settings.EtaValue!.Value.ToString(inv)}");
        if (settings.GuidanceRescale is not null) fields.Add($"Guidance rescale: {settings.GuidanceRescaleValue!.Value.ToString(inv)}");
        if (settings is Img2ImgSettings { ImageGuidanceValue: { } imageGuidance }) fields.Add($"Image CFG scale: {imageGuidance.ToString(inv)}");
        if (noiseLevel is { } level) fields.Add($"Noise level: {level}");
        // One line per ControlNet; with one ControlNet-Union, one per condition (its mode after the folder).
        var modes = settings.ControlModeValues;
        int controlLines = settings.ControlNets.Count == 0 ? 0 : settings.ControlSettingsCount;
        for (int i = 0; i < controlLines; i++)
        {
            static double Pick(double[]? values, int i, double fallback) => values is null ? fallback : values[values.Length == 1 ? 0 : i];
            string net = settings.ControlNets[settings.ControlNets.Count == 1 ? 0 : i] + (modes is null ? "" : $" mode {modes[i]}");
            fields.Add($"ControlNet{(controlLines > 1 ? $" {i + 1}" : "")}: {net}:{Pick(settings.ControlNetScaleValues, i, defaultScale).ToString(inv)}" +
                       $" [{Pick(settings.ControlStartValues, i, 0).ToString(inv)}, {Pick(settings.ControlEndValues, i, 1).ToString(inv)}]{(settings.GuessMode ? " guess mode" : "")}");
        }
        for (int i = 0; i < settings.Adapters.Count; i++)
        {
            double scale = settings.AdapterScaleValues is { } scales ? scales[scales.Length == 1 ? 0 : i] : 1.0;
            fields.Add($"T2I-Adapter{(settings.Adapters.Count > 1 ? $" {i + 1}" : "")}: {settings.Adapters[i]}:{scale.ToString(inv)}");
        }
        if (settings.AdapterFactorValue is { } factor) fields.Add($"Adapter factor: {factor.ToString(inv)}");
        if (settings.Redux is { } redux)
        {
            double[] scales = settings.ReduxScaleValues ?? [1.0], pooled = settings.ReduxPooledScaleValues ?? [1.0];
            for (int i = 0; i < settings.ReduxImage!.Length; i++)
                fields.Add($"Redux{(settings.ReduxImage.Length > 1 ? $" {i + 1}" : "")}: {redux}, {Path.GetFileName(settings.ReduxImage[i])}:" +
                           $"{scales[scales.Length == 1 ? 0 : i].ToString(inv)}/{pooled[pooled.Length == 1 ? 0 : i].ToString(inv)}");
        }
        if (settings.PagScaleValue is { } pagScale)
            fields.Add($"PAG: {pagScale.ToString(inv)}{(settings.PagAdaptiveScaleValue > 0 ? $" (adaptive {settings.PagAdaptiveScaleValue.ToString(inv)})" : "")}, layers {string.Join(",", settings.PagLayerList
                ?? (sd3 ? new StableDiffusion3PAGRequest().PagAppliedLayers : new StableDiffusionPAGRequest().PagAppliedLayers))}");
        if (settings.FreeUValue is { } freeU)
            fields.Add($"FreeU: {freeU.S1.ToString(inv)},{freeU.S2.ToString(inv)},{freeU.B1.ToString(inv)},{freeU.B2.ToString(inv)}");
        var loras = settings.Loras;
        for (int i = 0; i < loras.Count; i++)
            fields.Add($"Lora{(loras.Count > 1 ? $" {i + 1}" : "")}: {Path.GetFileName(loras[i].File)}:{loras[i].Scale.ToString(inv)}");
        if (settings is { IpAdapter: { } ipAdapter, IpAdapterImage: not null })
            fields.Add($"IP-Adapter: {Path.GetFileName(ipAdapter)}{(settings.IpAdapterScaleValue is { } ipScale ? ":" + ipScale.ToString(inv) : "")}");
        foreach (var (file, token) in settings.TextualInversions)
            fields.Add($"Textual inversion: {Path.GetFileName(file)}{(token is null ? "" : ":" + token)}");
        fields.Add("Software: DiffusersSharp");
        lines.Add(string.Join(", ", fields));
        return string.Join("\n", lines);
    }

    private static string NumberedPath(string path, int n) =>
        Path.Combine(Path.GetDirectoryName(path) ?? "", $"{Path.GetFileNameWithoutExtension(path)}-{n}{Path.GetExtension(path)}");

    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
    }
}
