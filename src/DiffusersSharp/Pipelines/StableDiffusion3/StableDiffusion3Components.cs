using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tokenizers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion3;

/// <summary>
/// The loaded components of a Stable Diffusion 3 / 3.5 pipeline folder. Shared by the text-to-image, image-to-image and
/// inpainting pipelines (<c>FromPipe</c>); freed when the last pipeline using them is disposed.
/// </summary>
public sealed class StableDiffusion3Components : IDisposable
{
    private int _users = 1; // the creator's reference, given up by Dispose
    private bool _creatorReleased;

    /// <summary>The MMDiT.</summary>
    public required SD3Transformer2DModel Transformer { get; init; }

    /// <summary>The 16-channel VAE.</summary>
    public required AutoencoderKL Vae { get; init; }

    /// <summary>CLIP-L with projection.</summary>
    public required CLIPTextModelWithProjection TextEncoder { get; init; }

    /// <summary>CLIP-G (OpenCLIP bigG) with projection.</summary>
    public required CLIPTextModelWithProjection TextEncoder2 { get; init; }

    /// <summary>T5 v1.1 XXL encoder, or null when dropped.</summary>
    public T5EncoderModel? TextEncoder3 { get; init; }

    /// <summary>CLIP-L tokenizer.</summary>
    public required CLIPTokenizer Tokenizer { get; init; }

    /// <summary>CLIP-G tokenizer (pads with "!").</summary>
    public required CLIPTokenizer Tokenizer2 { get; init; }

    /// <summary>T5 tokenizer, or null when T5 is dropped.</summary>
    public T5Tokenizer? Tokenizer3 { get; init; }

    /// <summary>The scheduler config; every call builds its own scheduler from it (schedulers hold per-call state).</summary>
    public required FlowMatchEulerDiscreteSchedulerConfig SchedulerConfig { get; init; }

    /// <summary>The device the models run on.</summary>
    public required Device Device { get; init; }

    /// <summary>The models' floating-point dtype.</summary>
    public required ScalarType Dtype { get; init; }

    /// <summary>Loads every component of a diffusers pipeline folder, or of a hub repo id (downloaded into the hub cache first).</summary>
    /// <exception cref="UnknownComponentException">model_index.json names a class DiffusersSharp does not implement.</exception>
    public static StableDiffusion3Components FromPretrained(string model, PipelineLoadOptions options, CancellationToken cancellationToken = default)
    {
        var device = options.ParsedDevice; // fail on a bad device before any download
        string folder = Hub.ModelSource.Resolve(model, options.HubOptions, options.DownloadProgress, cancellationToken);
        var index = ModelIndex.Read(folder);
        string[] required = ["transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"];
        foreach (var name in required)
            if (!index.Components.TryGetValue(name, out var spec) || spec.IsEmpty)
                throw new InvalidDataException($"{folder}: model_index.json has no '{name}' component; a Stable Diffusion 3 pipeline needs it.");
        foreach (var (name, spec) in index.Components)
            if (!spec.IsEmpty) ModelRegistry.KindOf(name, spec.ClassName!);
        bool withT5 = options.LoadTextEncoder3 && index.Components.TryGetValue("text_encoder_3", out var t5) && !t5.IsEmpty;

        var disposables = new List<IDisposable>();
        T Track<T>(T item) where T : class
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (item is IDisposable d) disposables.Add(d);
            return item;
        }
        string Sub(string name) => Path.Combine(folder, name);
        try
        {
            var schedulerConfig = ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Path.Combine(Sub("scheduler"), "scheduler_config.json"));
            var components = new StableDiffusion3Components
            {
                Tokenizer = Track(CLIPTokenizer.FromFolder(Sub("tokenizer"))),
                Tokenizer2 = Track(CLIPTokenizer.FromFolder(Sub("tokenizer_2"))),
                Tokenizer3 = withT5 ? Track(T5Tokenizer.FromFolder(Sub("tokenizer_3"))) : null,
                TextEncoder = Track(CLIPTextModelWithProjection.FromPretrained(Sub("text_encoder"), options.Dtype, device, options.Variant)),
                TextEncoder2 = Track(CLIPTextModelWithProjection.FromPretrained(Sub("text_encoder_2"), options.Dtype, device, options.Variant)),
                TextEncoder3 = withT5 ? Track(T5EncoderModel.FromPretrained(Sub("text_encoder_3"), options.Dtype, device, options.Variant)) : null,
                Transformer = Track(SD3Transformer2DModel.FromPretrained(Sub("transformer"), options.Dtype, device, options.Variant)),
                Vae = Track(AutoencoderKL.FromPretrained(Sub("vae"), options.Dtype, device, options.Variant)),
                SchedulerConfig = schedulerConfig,
                Device = device,
                Dtype = options.Dtype,
            };
            return components;
        }
        catch
        {
            foreach (var d in disposables) d.Dispose();
            throw;
        }
    }

    /// <summary>Builds the prompt encoder over these components.</summary>
    public StableDiffusion3PromptEncoder CreatePromptEncoder(Action<string, int, int>? onTruncated = null) =>
        new(Tokenizer, TextEncoder, Tokenizer2, TextEncoder2, Tokenizer3, TextEncoder3, Transformer.Config.JointAttentionDim)
        {
            OnTruncated = onTruncated,
        };

    internal StableDiffusion3Components Acquire()
    {
        lock (this)
        {
            ObjectDisposedException.ThrowIf(_users <= 0, this);
            _users++;
            return this;
        }
    }

    internal void Release()
    {
        lock (this)
        {
            if (--_users == 0) FreeModels();
        }
    }

    /// <summary>
    /// Gives up the creator's reference: the models are freed now if no pipeline uses them, else when the last pipeline
    /// sharing them is disposed.
    /// </summary>
    public void Dispose()
    {
        lock (this)
        {
            if (_creatorReleased) return;
            _creatorReleased = true;
        }
        Release();
    }

    private void FreeModels()
    {
        Transformer.Dispose();
        Vae.Dispose();
        TextEncoder.Dispose();
        TextEncoder2.Dispose();
        TextEncoder3?.Dispose();
    }
}
