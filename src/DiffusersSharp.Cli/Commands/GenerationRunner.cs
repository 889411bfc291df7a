using System.Globalization;
using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Pipelines;
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
    /// The flow of the three verbs: load the components, wrap them in the verb's pipeline, fill the request from the
    /// options, generate, write the images. The options were validated before this runs.
    /// </summary>
    public static int Run<TPipe, TRequest>(CliOutput output, GenerateSettings settings, string verb, int defaultSteps,
        Func<StableDiffusion3Components, TPipe> createPipeline, TRequest request,
        Func<TPipe, TRequest, GenerationRunner, StableDiffusion3Output> generate, CancellationToken ct)
        where TPipe : StableDiffusion3PipelineBase where TRequest : StableDiffusion3Request
    {
        using var runner = new GenerationRunner(output, settings);
        using var components = runner.LoadComponents(ct);
        using var pipe = createPipeline(components);
        pipe.OnPromptTruncated = (tokenizer, length, limit) =>
            output.Error.WriteLine($"warning: the prompt is {length} tokens for {tokenizer}; only {limit} are used.");
        using var result = generate(pipe, runner.Fill(request), runner);
        runner.Write(result, verb, settings.Steps ?? defaultSteps, settings.Model!);
        return ExitCodes.Ok;
    }

    public long Seed { get; } = settings.Seed ?? Random.Shared.NextInt64(0, 1L << 53);

    /// <summary>Loads the pipeline components (after the options were validated).</summary>
    public StableDiffusion3Components LoadComponents(CancellationToken ct)
    {
        var options = new PipelineLoadOptions
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
        output.Error.WriteLine($"loading {settings.Model} ({settings.Dtype}, {settings.Device})");
        var components = StableDiffusion3Components.FromPretrained(settings.Model!, options, ct);
        if (settings.Lora is null) return components;
        try
        {
            int layers = components.FuseLora(settings.Lora, settings.LoraScaleValue);
            output.Error.WriteLine($"fused {layers} LoRA layers from {settings.Lora} at scale {settings.LoraScale}");
            return components;
        }
        catch
        {
            components.Dispose();
            throw;
        }
    }

    /// <summary>Fills the request fields common to the three verbs.</summary>
    public T Fill<T>(T request) where T : StableDiffusion3Request
    {
        var generator = new Generator(settings.GeneratorDevice).ManualSeed(Seed);
        _owned.Add(generator);
        request = request with
        {
            Prompt = settings.Prompt is null ? null : (PromptList?)settings.Prompt,
            Prompt2 = settings.Prompt2 is null ? null : (PromptList?)settings.Prompt2,
            Prompt3 = settings.Prompt3 is null ? null : (PromptList?)settings.Prompt3,
            NegativePrompt = settings.NegativePrompt is null ? null : (PromptList?)settings.NegativePrompt,
            Height = settings.Height,
            Width = settings.Width,
            NumInferenceSteps = settings.Steps,
            GuidanceScale = settings.GuidanceScale,
            NumImagesPerPrompt = settings.NumImages,
            Generator = generator,
            ClipSkip = settings.ClipSkip,
            MaxSequenceLength = settings.MaxSequenceLength,
            SkipGuidanceLayers = settings.SkipLayerList,
            OutputType = OutputType.Image,
        };
        if (settings.PromptEmbeds is { } file)
        {
            using var weights = SafetensorsFile.Open(file);
            Tensor? Get(string key) => weights.Tensors.ContainsKey(key) ? Track(weights.Read(key).clone()) : null;
            request = request with
            {
                PromptEmbeds = Get("prompt_embeds") ?? throw new InvalidDataException($"{file} has no 'prompt_embeds' tensor."),
                PooledPromptEmbeds = Get("pooled_prompt_embeds") ?? throw new InvalidDataException($"{file} has no 'pooled_prompt_embeds' tensor."),
                NegativePromptEmbeds = Get("negative_prompt_embeds"),
                NegativePooledPromptEmbeds = Get("negative_pooled_prompt_embeds"),
            };
        }
        return request;
    }

    private Tensor Track(Tensor t)
    {
        _owned.Add(t);
        return t;
    }

    /// <summary>Writes the images atomically (out.png, or out-1.png ... out-N.png) with the parameters in a PNG text chunk.</summary>
    public void Write(StableDiffusion3Output result, string verb, int steps, string model)
    {
        var images = result.Images ?? throw new InvalidOperationException("The pipeline returned no images.");
        string parameters = Parameters(verb, steps, model);
        for (int i = 0; i < images.Count; i++)
        {
            string path = images.Count == 1 ? settings.Output : NumberedPath(settings.Output, i + 1);
            ImageFile.Save(images[i], path, new Dictionary<string, string> { [PngText.ParametersKeyword] = parameters });
            output.Out.WriteLine(Path.GetFullPath(path));
        }
    }

    private string Parameters(string verb, int steps, string model)
    {
        var inv = CultureInfo.InvariantCulture;
        var lines = new List<string> { settings.Prompt ?? "" };
        if (settings.NegativePrompt is not null) lines.Add($"Negative prompt: {settings.NegativePrompt}");
        var fields = new List<string>
        {
            $"Steps: {steps}", "Sampler: FlowMatchEulerDiscrete", $"CFG scale: {settings.GuidanceScale.ToString(inv)}",
            $"Seed: {Seed}", $"Generator: {settings.GeneratorDevice}", $"Model: {model}", $"Dtype: {settings.Dtype}", $"Mode: {verb}",
        };
        if (settings.Width is not null || settings.Height is not null) fields.Add($"Size: {settings.Width}x{settings.Height}");
        if (settings is Img2ImgSettings i2i) fields.Add($"Denoising strength: {i2i.StrengthValue.ToString(inv)}");
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
