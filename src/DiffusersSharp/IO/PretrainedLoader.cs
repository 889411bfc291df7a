using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.IO;

/// <summary>
/// The one <c>from_pretrained</c> of every model: read <c>config.json</c>, build the model on the <c>meta</c> device,
/// fill it strictly from the folder's safetensors in the requested dtype and device, switch to eval mode.
/// </summary>
public static class PretrainedLoader
{
    /// <summary>Loads the model in <paramref name="folder"/>.</summary>
    /// <param name="folder">A component folder with config.json and safetensors weights.</param>
    /// <param name="build">Builds the (empty) model from its config on the given device.</param>
    /// <param name="dtype">Floating-point dtype of the weights (null keeps the stored one).</param>
    /// <param name="device">Target device (default CPU).</param>
    /// <param name="variant">Weight variant such as "fp16"; a folder without it falls back to the default weights, as diffusers does.</param>
    /// <param name="options">Model-specific loading rules (ignored legacy keys, tied weights); dtype and device are set from the arguments.</param>
    public static TModel Load<TConfig, TModel>(string folder, Func<TConfig, Device, TModel> build, ScalarType? dtype = null,
        Device? device = null, string? variant = null, WeightLoadOptions? options = null)
        where TConfig : class where TModel : nn.Module
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"Model folder not found: {folder}");
        return Load(folder, ConfigJson.Read<TConfig>(Path.Combine(folder, "config.json")), build, dtype, device, variant, options);
    }

    /// <summary>
    /// Loads the weights in <paramref name="folder"/> into the model of <paramref name="config"/> (read by the caller, e.g.
    /// a sub-config of the folder's config.json), as <see cref="Load{TConfig, TModel}(string, Func{TConfig, Device, TModel}, ScalarType?, Device?, string?, WeightLoadOptions?)"/>.
    /// </summary>
    public static TModel Load<TConfig, TModel>(string folder, TConfig config, Func<TConfig, Device, TModel> build, ScalarType? dtype = null,
        Device? device = null, string? variant = null, WeightLoadOptions? options = null)
        where TConfig : class where TModel : nn.Module
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        ArgumentNullException.ThrowIfNull(config);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"Model folder not found: {folder}");
        using var weights = OpenWeights(folder, variant)
            ?? throw new FileNotFoundException($"{folder} holds no safetensors weights (diffusion_pytorch_model.safetensors, model.safetensors or a sharded index).");
        var model = build(config, new Device("meta"));
        try
        {
            StateDictLoader.Load(model, weights, (options ?? new WeightLoadOptions()) with { Dtype = dtype, Device = device });
        }
        catch
        {
            model.Dispose();
            throw;
        }
        model.eval();
        return model;
    }

    /// <summary>
    /// Loads a model from a single-file checkpoint whose keys need converting (an original, non-diffusers layout):
    /// builds it on <c>meta</c>, converts the file's tensors to its state-dict names and loads them strictly.
    /// </summary>
    /// <param name="path">The .safetensors file.</param>
    /// <param name="build">Builds the (empty) model on the given device; the file is open for reading a config from its keys.</param>
    /// <param name="convert">The model's tensors under diffusers' names (views of the mapped file where possible).</param>
    /// <param name="dtype">Floating-point dtype of the weights (null keeps the stored one).</param>
    /// <param name="device">Target device (default CPU).</param>
    public static TModel LoadConverted<TModel>(string path, Func<SafetensorsFile, Device, TModel> build,
        Func<SafetensorsFile, Dictionary<string, Tensor>> convert, ScalarType? dtype = null, Device? device = null) where TModel : nn.Module
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Checkpoint not found: {path}", path);
        using var file = SafetensorsFile.Open(path);
        var model = build(file, new Device("meta"));
        try
        {
            var tensors = convert(file);
            try
            {
                StateDictLoader.Load(model, tensors, new WeightLoadOptions { Dtype = dtype, Device = device });
            }
            finally
            {
                foreach (var t in tensors.Values) t.Dispose();
            }
        }
        catch
        {
            model.Dispose();
            throw;
        }
        model.eval();
        return model;
    }

    private static WeightFiles? OpenWeights(string folder, string? variant)
    {
        var files = (variant is null ? null : WeightFiles.FindExact(folder, variant)) ?? WeightFiles.FindExact(folder, null);
        return files is null ? null : WeightFiles.Open(files);
    }
}
