using System.Globalization;
using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Runtime;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Cli.Commands;

/// <summary>What <c>generate</c>, <c>img2img</c> and <c>inpaint</c> share: loading, the request, writing the images.</summary>
internal sealed class GenerationRunner(CliOutput output, GenerateSettings settings) : IDisposable
{
    private readonly List<IDisposable> _owned = [];

    public ConsoleProgress Progress { get; } = ConsoleProgress.ForStderr(output.Error);

    /// <summary>
    /// The flow of the three verbs: find the model's family from its model_index.json (downloading a hub repo first), check
    /// the options against it, load the components, run the verb's pipeline of that family, write the images. The options
    /// were validated before this runs.
    /// </summary>
    public static int Run(CliOutput output, GenerateSettings settings, string verb, VerbPipelines pipelines, CancellationToken ct)
    {
        using var runner = new GenerationRunner(output, settings);
        var options = runner.LoadOptions();
        string folder = options.ResolveFolder(settings.Model!, ct);
        string pipelineClass = ModelIndex.Read(folder).ClassName;
        bool unet = StableDiffusionComponents.IsSupportedPipeline(pipelineClass);
        if (unet) runner.CheckUNetOptions(pipelineClass);
        else runner.CheckSd3Options();
        output.Error.WriteLine($"loading {settings.Model} ({settings.Dtype}, {settings.Device})");
        if (unet)
        {
            using var components = runner.WithLora(StableDiffusionComponents.FromPretrained(folder, options, ct), c => c.FuseLora);
            if (settings.Scheduler is { } scheduler) components.UseScheduler(scheduler);
            var request = runner.FillUNet(pipelines.UNetRequest());
            var (result, guidance, strength) = pipelines.RunUNet(components, request, runner.OnTruncated, runner.Progress, ct);
            using (result)
                runner.Write(result.Images, verb, pipelines.UNetDefaultSteps, components.SchedulerClassName.Replace("Scheduler", ""), guidance, strength);
        }
        else
        {
            using var components = runner.WithLora(StableDiffusion3Components.FromPretrained(folder, options, ct), c => c.FuseLora);
            var request = runner.Fill(pipelines.Sd3Request());
            using var result = pipelines.RunSd3(components, request, runner.OnTruncated, runner.Progress, ct);
            runner.Write(result.Images, verb, pipelines.Sd3DefaultSteps, "FlowMatchEulerDiscrete", request.GuidanceScale,
                (request as StableDiffusion3Img2ImgRequest)?.Strength);
        }
        return ExitCodes.Ok;
    }

    public long Seed { get; } = settings.Seed ?? Random.Shared.NextInt64(0, 1L << 53);

    private Action<string, int, int> OnTruncated => (tokenizer, length, limit) =>
        output.Error.WriteLine($"warning: the prompt is {length} tokens for {tokenizer}; only {limit} are used.");

    private PipelineLoadOptions LoadOptions() => new()
    {
        Dtype = TorchDtypes.Parse(settings.Dtype),
        Device = settings.Device,
        Variant = settings.Variant,
        LoadTextEncoder3 = !settings.NoT5,
        Offload = settings.Offload == "model" ? OffloadMode.Model : OffloadMode.None,
        HubToken = settings.Token,
        Revision = settings.Revision,
        DownloadProgress = new Progress<Hub.DownloadProgress>(p =>
        {
            if (p.Done) output.Error.WriteLine($"downloaded {p.File} ({p.FilesDone}/{p.FileCount})");
        }),
    };

    /// <summary>Options that only SD3 has are refused for a UNet model (before any weights load).</summary>
    private void CheckUNetOptions(string pipelineClass)
    {
        string? sd3Only = settings.NoT5 ? "--no-t5" : settings.Prompt3 is not null ? "--prompt-3" : settings.SkipLayers is not null ? "--skip-layers"
            : settings.MaxSequenceLength is not null ? "--max-sequence-length" : null;
        if (sd3Only is not null)
            throw new ArgumentException($"{sd3Only} applies to Stable Diffusion 3 models; {settings.Model} is a {pipelineClass}.");
        if (settings.Scheduler is { } scheduler) StableDiffusionComponents.CheckSchedulerName(scheduler);
        if (settings.Prompt2 is not null && !pipelineClass.Contains("XL", StringComparison.Ordinal))
            throw new ArgumentException($"--prompt-2 applies to models with two text encoders (SD3, SDXL); {settings.Model} is a {pipelineClass}.");
    }

    /// <summary>SD3's own constraints on the shared options (before any weights load).</summary>
    private void CheckSd3Options()
    {
        if (settings.Scheduler is not null)
            throw new ArgumentException("--scheduler applies to SD 1.x / 2.x and SDXL models; Stable Diffusion 3 has one scheduler (FlowMatchEulerDiscrete).");
        if (settings.Width is { } w && w % 16 != 0) throw new ArgumentException($"--width must be a positive multiple of 16 for Stable Diffusion 3, got {w}.");
        if (settings.Height is { } h && h % 16 != 0) throw new ArgumentException($"--height must be a positive multiple of 16 for Stable Diffusion 3, got {h}.");
    }

    /// <summary>Fuses the --lora file, if any, into freshly loaded components (freed again if that fails).</summary>
    private T WithLora<T>(T components, Func<T, Func<string, double, int>> fuse) where T : PipelineComponents
    {
        if (settings.Lora is null) return components;
        try
        {
            int layers = fuse(components)(settings.Lora, settings.LoraScaleValue);
            output.Error.WriteLine($"fused {layers} LoRA layers from {settings.Lora} at scale {settings.LoraScale}");
            return components;
        }
        catch
        {
            components.Dispose();
            throw;
        }
    }

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
            OutputType = OutputType.Image,
        };
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
        if (ReadPromptEmbeds(pooledRequired: true) is { } e)
            request = request with
            {
                PromptEmbeds = e.Embeds, PooledPromptEmbeds = e.Pooled, NegativePromptEmbeds = e.NegativeEmbeds, NegativePooledPromptEmbeds = e.NegativePooled,
            };
        return request;
    }

    private T Track<T>(T item) where T : IDisposable
    {
        _owned.Add(item);
        return item;
    }

    /// <summary>Writes the images atomically (out.png, or out-1.png ... out-N.png) with the parameters in a PNG text chunk.</summary>
    private void Write(IReadOnlyList<ImageBuffer>? images, string verb, int defaultSteps, string sampler, double guidance, double? strength)
    {
        if (images is null) throw new InvalidOperationException("The pipeline returned no images.");
        string parameters = Parameters(verb, settings.Steps ?? defaultSteps, settings.Model!, sampler, guidance, strength);
        for (int i = 0; i < images.Count; i++)
        {
            string path = images.Count == 1 ? settings.Output : NumberedPath(settings.Output, i + 1);
            ImageFile.Save(images[i], path, new Dictionary<string, string> { [PngText.ParametersKeyword] = parameters });
            output.Out.WriteLine(Path.GetFullPath(path));
        }
    }

    private string Parameters(string verb, int steps, string model, string sampler, double guidance, double? strength)
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
        if (settings.SkipLayers is not null) fields.Add($"Skip layers: {settings.SkipLayers}");
        if (settings.Lora is not null) fields.Add($"Lora: {Path.GetFileName(settings.Lora)}:{settings.LoraScaleValue.ToString(inv)}");
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
