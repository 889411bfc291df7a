using static TorchSharp.torch;

namespace DiffusersSharp.Models.Adapters;

/// <summary>
/// diffusers' <c>MultiAdapter</c> (models/adapter.py): several <see cref="T2IAdapter"/>s, each fed its own image, whose
/// feature maps are summed with one weight per adapter. The adapters must downscale alike (same downscale_factor and
/// total_downscale_factor), so that their maps line up. diffusers saves it as one adapter folder per adapter, so it has
/// no weights of its own; it owns the adapters it is given (disposing it disposes them).
/// </summary>
public sealed class MultiAdapter : IDisposable
{
    private readonly T2IAdapter[] _adapters;
    private bool _disposed;

    /// <summary>Groups <paramref name="list"/> (at least two, as diffusers requires; one adapter is used alone).</summary>
    /// <exception cref="ArgumentException">Fewer than two adapters, or adapters that downscale differently.</exception>
    public MultiAdapter(IReadOnlyList<T2IAdapter> list)
    {
        ArgumentNullException.ThrowIfNull(list);
        if (list.Count < 2)
            throw new ArgumentException(list.Count == 0 ? "Expecting at least one adapter." : "For a single adapter, use the T2IAdapter itself, not a MultiAdapter.", nameof(list));
        CheckCompatible(list);
        _adapters = list.ToArray();
    }

    /// <summary>
    /// diffusers' <c>MultiAdapter.from_pretrained(path)</c>: loads <paramref name="folder"/>, then <c>folder_1</c>,
    /// <c>folder_2</c>... for as long as they exist (the layout its <c>save_pretrained</c> writes).
    /// </summary>
    /// <exception cref="DirectoryNotFoundException"><paramref name="folder"/> does not exist.</exception>
    /// <exception cref="ArgumentException">Fewer than two adapter folders, or adapters that downscale differently.</exception>
    public static MultiAdapter FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"Adapter folder not found: {folder}");
        var loaded = new List<T2IAdapter>();
        try
        {
            for (string path = folder; Directory.Exists(path); path = $"{folder}_{loaded.Count}")
                loaded.Add(T2IAdapter.FromPretrained(path, dtype, device, variant));
            return new MultiAdapter(loaded);
        }
        catch
        {
            foreach (var adapter in loaded) adapter.Dispose();
            throw;
        }
    }

    /// <summary>The adapters, in order.</summary>
    public IReadOnlyList<T2IAdapter> Adapters => _adapters;

    /// <summary>Disposes the adapters.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var adapter in _adapters) adapter.Dispose();
    }

    /// <summary>The shared pixel-unshuffle factor.</summary>
    public int DownscaleFactor => _adapters[0].DownscaleFactor;

    /// <summary>The shared total downscale factor.</summary>
    public int TotalDownscaleFactor => _adapters[0].TotalDownscaleFactor;

    /// <summary>Throws unless every adapter downscales as the first (diffusers' MultiAdapter check).</summary>
    /// <exception cref="ArgumentException">An adapter downscales differently; the message names it.</exception>
    public static void CheckCompatible(IReadOnlyList<T2IAdapter> list)
    {
        ArgumentNullException.ThrowIfNull(list);
        for (int i = 1; i < list.Count; i++)
            if (list[i].TotalDownscaleFactor != list[0].TotalDownscaleFactor || list[i].DownscaleFactor != list[0].DownscaleFactor)
                throw new ArgumentException(
                    $"Expecting all adapters to have the same downscaling behavior, but adapter 0 has downscale_factor {list[0].DownscaleFactor} and total_downscale_factor " +
                    $"{list[0].TotalDownscaleFactor}, adapter {i} {list[i].DownscaleFactor} and {list[i].TotalDownscaleFactor}.");
    }

    /// <summary>
    /// <c>sum_k w_k x adapter_k(xs[k])</c> per feature map, in order (diffusers' <c>forward(xs, adapter_weights)</c>):
    /// one input per adapter, and <paramref name="adapterWeights"/> one weight per adapter (default 1 / count each; taken
    /// as float32, as diffusers' <c>torch.tensor(adapter_weights)</c>).
    /// </summary>
    /// <exception cref="ArgumentException">The input or weight count differs from the adapter count, a weight is not finite, or an input does not fit its adapter.</exception>
    public Tensor[] forward(IReadOnlyList<Tensor> xs, IReadOnlyList<double>? adapterWeights = null)
    {
        ArgumentNullException.ThrowIfNull(xs);
        ObjectDisposedException.ThrowIf(_disposed, this);
        int n = _adapters.Length;
        if (xs.Count != n) throw new ArgumentException($"A MultiAdapter of {n} adapters takes {n} inputs, one per adapter; got {xs.Count}.", nameof(xs));
        if (adapterWeights is not null && adapterWeights.Count != n)
            throw new ArgumentException($"adapter_weights has {adapterWeights.Count} entries for {n} adapters.", nameof(adapterWeights));
        if (adapterWeights is not null && adapterWeights.Any(w => !double.IsFinite(w)))
            throw new ArgumentException("adapter_weights must be finite numbers.", nameof(adapterWeights));
        var weights = adapterWeights?.Select(w => (float)w).ToArray() ?? Enumerable.Repeat(1f / n, n).ToArray();
        for (int k = 0; k < n; k++)
        {
            var x = xs[k] ?? throw new ArgumentException($"Input {k} is null.", nameof(xs));
            if (x.dim() != 4) throw new ArgumentException($"Input {k} must be [B, C, H, W], got [{string.Join(", ", x.shape)}].", nameof(xs));
            var (first, shapes) = (_adapters[0].FeatureShapes(xs[0].shape[0], xs[0].shape[2], xs[0].shape[3]), _adapters[k].FeatureShapes(x.shape[0], x.shape[2], x.shape[3]));
            if (shapes.Count != first.Count || shapes.Zip(first).Any(p => !p.First.SequenceEqual(p.Second)))
                throw new ArgumentException($"Adapter {k}'s feature maps ({Describe(shapes)}) differ from adapter 0's ({Describe(first)}): they cannot be summed.", nameof(xs));
        }
        return WeightedSum(_adapters, xs, weights);
    }

    /// <summary>Feature map shapes as text, for messages.</summary>
    internal static string Describe(IEnumerable<long[]> shapes) => string.Join(", ", shapes.Select(s => "[" + string.Join(", ", s) + "]"));

    /// <summary>The weighted sum of several adapters' feature maps, accumulated in adapter order as diffusers does.</summary>
    internal static Tensor[] WeightedSum(IReadOnlyList<T2IAdapter> list, IReadOnlyList<Tensor> xs, IReadOnlyList<float> weights)
    {
        using var scope = NewDisposeScope();
        Tensor[]? sum = null;
        for (int k = 0; k < list.Count; k++)
        {
            var features = list[k].forward(xs[k]);
            if (sum is null)
            {
                sum = features.Select(f => f * weights[k]).ToArray();
                continue;
            }
            for (int i = 0; i < sum.Length; i++) sum[i] = sum[i] + weights[k] * features[i];
        }
        foreach (var t in sum!) t.MoveToOuterDisposeScope();
        return sum;
    }
}
