using System.Diagnostics;

namespace DiffusersSharp.Pipelines;

/// <summary>
/// Loads a pipeline folder's components one at a time for a components class's <c>FromPretrained</c>: cancellation is
/// checked before each load, each load is timed (<see cref="PipelineComponents.LoadMilliseconds"/>), and what has been
/// loaded is kept so that a later failure disposes all of it.
/// </summary>
internal sealed class ComponentLoader(string folder, CancellationToken cancellationToken)
{
    private readonly List<IDisposable> _loaded = [];

    /// <summary>Milliseconds each named load took.</summary>
    public Dictionary<string, double> LoadMilliseconds { get; } = new();

    /// <summary>The component folder <paramref name="name"/> of the pipeline folder.</summary>
    public string Sub(string name) => Path.Combine(folder, name);

    /// <summary>Loads <paramref name="name"/> (a model) with <paramref name="load"/>, timed and kept for disposal on failure.</summary>
    public T Load<T>(string name, Func<T> load) where T : IDisposable
    {
        cancellationToken.ThrowIfCancellationRequested();
        long start = Stopwatch.GetTimestamp();
        var item = load();
        _loaded.Add(item);
        LoadMilliseconds[name] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        return item;
    }

    /// <summary>Keeps an untimed item (a tokenizer) for disposal on failure when it is disposable.</summary>
    public T Keep<T>(T item) where T : class
    {
        if (item is IDisposable d) _loaded.Add(d);
        cancellationToken.ThrowIfCancellationRequested();
        return item;
    }

    /// <summary>Disposes everything loaded so far (the failure path of a <c>FromPretrained</c>).</summary>
    public void DisposeLoaded()
    {
        foreach (var d in _loaded) d.Dispose();
        _loaded.Clear();
    }
}
