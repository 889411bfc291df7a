using DiffusersSharp.IO;
using DiffusersSharp.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Diagnostics;

/// <summary>
/// Fills a model with seeded normal weights in a fixed, documented order, so that another libtorch program (PyTorch,
/// diffusers) holding the same seed draws the very same weights: for each <c>state_dict</c> key in ordinal (code point)
/// order, which is Python's <c>sorted()</c> on str, <c>randn(shape, float32) * std</c> is drawn from the generator and
/// cast to the dtype of the tensor it replaces. Persistent buffers (SD3's <c>pos_embed.pos_embed</c>) are keys too.
/// </summary>
public static class SeededWeights
{
    /// <summary>
    /// Replaces every parameter and persistent buffer of <paramref name="module"/> (typically built on the <c>meta</c>
    /// device) with <c>randn(shape, float32) * std</c> from <paramref name="generator"/>, cast to that tensor's dtype and
    /// placed on <paramref name="device"/>. Returns the keys in the order they were drawn. The module is put in eval mode.
    /// </summary>
    /// <exception cref="ArgumentException">A tensor of the module is not floating point (nothing is drawn then).</exception>
    public static IReadOnlyList<string> Fill(nn.Module module, Generator generator, Device device, double std = 0.02)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(generator);
        ArgumentNullException.ThrowIfNull(device);
        var shapes = new List<(string Key, long[] Shape, ScalarType Dtype)>();
        foreach (var (key, tensor) in module.state_dict().OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            if (!tensor.is_floating_point())
                throw new ArgumentException($"{module.GetName()}: '{key}' is {tensor.dtype}; seeded weights are drawn for floating-point tensors only.", nameof(module));
            shapes.Add((key, tensor.shape, tensor.dtype));
        }
        using var noGrad = torch.no_grad();
        foreach (var (key, shape, dtype) in shapes)
            StateDictLoader.Replace(module, key, Normal(generator, shape, dtype, device, std));
        var left = module.state_dict().Where(kv => kv.Value.device_type == DeviceType.META).Select(kv => kv.Key).ToList();
        if (left.Count > 0)
            throw new InvalidOperationException($"{module.GetName()}: still on the meta device after filling: {string.Join(", ", left)}.");
        module.eval();
        return shapes.Select(s => s.Key).ToList();
    }

    /// <summary>
    /// One draw of the procedure: <c>randn(shape, float32)</c> from <paramref name="generator"/>, times
    /// <paramref name="scale"/> in float32 (skipped for 1), cast to <paramref name="dtype"/> on <paramref name="device"/>.
    /// </summary>
    public static Tensor Normal(Generator generator, long[] shape, ScalarType dtype, Device device, double scale = 1.0)
    {
        ArgumentNullException.ThrowIfNull(generator);
        using var scope = NewDisposeScope();
        var drawn = generator.Randn(shape, ScalarType.Float32, device);
        var scaled = scale == 1.0 ? drawn : drawn * scale;
        var result = scaled.dtype == dtype ? scaled : scaled.to(dtype);
        return result.MoveToOuterDisposeScope();
    }
}
