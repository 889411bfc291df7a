using DiffusersSharp.Loaders;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines;

/// <summary>
/// What the loaded components of every pipeline family share: the execution device and dtype, model CPU offload, and
/// the reference count that lets pipelines share one set of models (diffusers' <c>from_pipe</c>): the models are freed
/// when the creator and the last pipeline using them are done.
/// </summary>
public abstract class PipelineComponents : IDisposable
{
    /// <summary>
    /// The start every <c>FromPretrained</c> shares: resolves <paramref name="model"/> (a hub repo id is downloaded into the
    /// hub cache first) and reads its model_index.json; then, before any weights load, checks that it names a pipeline
    /// <paramref name="isSupported"/> accepts (<paramref name="expected"/> names them in the error; null accepts any), that
    /// each of <paramref name="required"/> is there, and that DiffusersSharp knows every component's class
    /// (<paramref name="skipUnused"/>: not the components no pipeline here loads).
    /// </summary>
    /// <exception cref="IO.UnknownComponentException">model_index.json names a class DiffusersSharp does not implement.</exception>
    /// <exception cref="InvalidDataException">Another pipeline, or a required component missing.</exception>
    private protected static (string Folder, IO.ModelIndex Index) OpenPipelineFolder(string model, PipelineLoadOptions options, string family,
        Func<string, bool>? isSupported, string? expected, IReadOnlyList<string> required, bool skipUnused, CancellationToken cancellationToken)
    {
        string folder = Hub.ModelSource.Resolve(model, options.HubOptions, options.DownloadProgress, cancellationToken);
        var index = IO.ModelIndex.Read(folder);
        if (isSupported is not null && !isSupported(index.ClassName))
            throw new InvalidDataException($"{folder}: model_index.json names {index.ClassName}, not {expected}.");
        foreach (var name in required)
            if (!index.Components.TryGetValue(name, out var spec) || spec.IsEmpty)
                throw new InvalidDataException($"{folder}: model_index.json has no '{name}' component; a {family} pipeline needs it.");
        foreach (var (name, spec) in index.Components)
            if (!spec.IsEmpty && !(skipUnused && Hub.HubFileSelector.IsUnused(name, index.ClassName))) Models.ModelRegistry.KindOf(name, spec.ClassName!);
        return (folder, index);
    }

    private int _users = 1; // the creator's reference, given up by Dispose
    private bool _creatorReleased;
    private ModelOffloader? _offloader;

    /// <summary>
    /// The execution device: where the models run and the pipeline's tensors live. Under model offload
    /// (<see cref="EnableModelCpuOffload"/>) the models wait on the CPU and come here one at a time.
    /// </summary>
    public required Device Device { get; init; }

    /// <summary>The models' floating-point dtype.</summary>
    public required ScalarType Dtype { get; init; }

    /// <summary>Milliseconds each model took to load (component name -> ms), when loaded from a folder.</summary>
    public IReadOnlyDictionary<string, double> LoadMilliseconds { get; init; } = new Dictionary<string, double>();

    /// <summary>Where the models stay between uses.</summary>
    public OffloadMode Offload => _offloader is null ? OffloadMode.None : OffloadMode.Model;

    /// <summary>Raised for every move of a model under model offload (the sequence diffusers' hooks would make).</summary>
    public event Action<ModelMove>? ModelMoved;

    /// <summary>The LoRAs fused into these models by <c>FuseLora</c>, kept so that <see cref="UnfuseLora"/> can take them out.</summary>
    private protected FusedLoras FusedLoras { get; } = new();

    /// <summary>How many LoRA files are fused into these models.</summary>
    public int FusedLoraCount => FusedLoras.Count;

    /// <summary>
    /// diffusers' <c>unfuse_lora</c>: takes every LoRA fused by <c>FuseLora</c> back out of the models, newest first,
    /// subtracting what was added (so the weights return up to one rounding in the model's dtype). Afterwards other
    /// LoRAs can be fused, or the same one with another scale.
    /// </summary>
    public void UnfuseLora()
    {
        FusedLoras.Unfuse();
    }

    /// <summary>The loaded models by component name, in diffusers' <c>model_cpu_offload_seq</c> order.</summary>
    protected abstract IReadOnlyDictionary<string, nn.Module> OffloadableModels();

    /// <summary>Frees every model (called once, when the last user is gone).</summary>
    protected abstract void FreeModels();

    /// <summary>
    /// <see cref="OffloadableModels"/> of the families with one text encoder, one transformer and one VAE (diffusers'
    /// <c>model_cpu_offload_seq</c> "text_encoder->transformer->vae"); the text encoder is left out when not loaded.
    /// </summary>
    private protected static IReadOnlyDictionary<string, nn.Module> TextEncoderTransformerVae(nn.Module? textEncoder, nn.Module transformer, nn.Module vae)
    {
        var models = new Dictionary<string, nn.Module>();
        if (textEncoder is not null) models["text_encoder"] = textEncoder;
        models["transformer"] = transformer;
        models["vae"] = vae;
        return models;
    }

    /// <summary>Disposes each of <paramref name="models"/> that is loaded (a <see cref="FreeModels"/> body).</summary>
    private protected static void DisposeAll(params IDisposable?[] models)
    {
        foreach (var model in models) model?.Dispose();
    }

    /// <summary>
    /// diffusers' <c>enable_model_cpu_offload</c>: moves every model to the CPU; from now on each one moves to
    /// <see cref="Device"/> when the pipeline uses it and the previous one goes back to the CPU, so at most one model is
    /// on the device. Calling it again does nothing. <see cref="ModelMoved"/> reports each move.
    /// </summary>
    public void EnableModelCpuOffload()
    {
        if (_offloader is not null) return;
        var models = OffloadableModels();
        foreach (var model in models.Values) ModuleMover.MoveTo(model, CPU);
        _offloader = new ModelOffloader(Device, models, move => ModelMoved?.Invoke(move));
    }

    /// <summary>Under model offload, takes in models added after it was enabled (an IP-Adapter's image encoder): all go
    /// back to the CPU and move per use from then on.</summary>
    /// <summary>
    /// The load order of every <c>load_ip_adapter</c>: the image encoder from <paramref name="encoderFolder"/> (only when one
    /// is named and <paramref name="hasEncoder"/> is false: diffusers keeps a loaded one), on the CPU under model offload,
    /// then the adapter's weights (<paramref name="loadWeights"/>, given the new encoder or null); a new encoder is freed
    /// again if the weights fail. Returns the new encoder (the caller keeps it and refreshes the offload order), or null.
    /// </summary>
    private protected TEncoder? LoadIpAdapterWithEncoder<TEncoder>(string? encoderFolder, bool hasEncoder,
        Func<string, ScalarType, Device, TEncoder> loadEncoder, Action<TEncoder?> loadWeights) where TEncoder : class, IDisposable
    {
        var encoder = encoderFolder is not null && !hasEncoder ? loadEncoder(encoderFolder, Dtype, Offload == OffloadMode.Model ? CPU : Device) : null;
        try
        {
            loadWeights(encoder);
        }
        catch
        {
            encoder?.Dispose();
            throw;
        }
        return encoder;
    }

    private protected void RefreshModelOffload()
    {
        if (_offloader is null) return;
        _offloader.OffloadAll();
        _offloader = null;
        EnableModelCpuOffload();
    }

    /// <summary>Under model offload, puts <paramref name="component"/> on the execution device (and the previous one back on the CPU).</summary>
    internal void Activate(string component) => _offloader?.Activate(component);

    /// <summary>Under model offload, moves the model on the execution device back to the CPU (the end of a call).</summary>
    internal void OffloadAll() => _offloader?.OffloadAll();

    /// <summary>Under model offload, the component now on the execution device (null otherwise, or between calls).</summary>
    internal string? ActiveComponent => _offloader?.OnDevice;

    /// <summary>
    /// Runs <paramref name="use"/> with <paramref name="component"/> on the execution device and puts the model that was
    /// there back afterwards (model offload; without it this only runs <paramref name="use"/>): lets a step callback decode
    /// a preview in the middle of the denoising loop.
    /// </summary>
    internal T WithActive<T>(string component, Func<T> use)
    {
        var previous = ActiveComponent;
        Activate(component);
        try
        {
            return use();
        }
        finally
        {
            if (previous is not null) Activate(previous);
        }
    }

    /// <summary>The offloader's hook for encoders that run outside the pipeline class (null without offload).</summary>
    internal Action<string>? ActivateHook => _offloader is null ? null : _offloader.Activate;

    /// <summary>Takes a reference for a pipeline; throws when the models are already freed.</summary>
    internal void Acquire()
    {
        lock (this)
        {
            ObjectDisposedException.ThrowIf(_users <= 0, this);
            _users++;
        }
    }

    /// <summary>Gives a pipeline's reference back; the last one frees the models.</summary>
    internal void Release()
    {
        lock (this)
        {
            if (--_users != 0) return;
            _offloader?.Dispose(); // the CPU copies of a model left on the device by a failed call
            FreeModels();
            FusedLoras.Dispose();
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
        GC.SuppressFinalize(this);
    }
}
