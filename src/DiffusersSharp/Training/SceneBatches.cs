using DiffusersSharp.Training.Shapes;

namespace DiffusersSharp.Training;

/// <summary>
/// The training scenes of a seed cut into batches: batch <c>n</c> is scenes <c>[n·B, (n+1)·B)</c> of
/// <see cref="ShapeScenes.TrainingScenes"/>, so any step's data can be drawn again (a resumed run skips ahead).
/// </summary>
public sealed class SceneBatches
{
    private readonly long _seed;
    private IEnumerator<SceneSpec>? _stream;
    private long _position;

    /// <summary>Creates the batches of <paramref name="seed"/> with <paramref name="batchSize"/> scenes each.</summary>
    public SceneBatches(long seed, int batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        _seed = seed;
        BatchSize = batchSize;
    }

    /// <summary>Scenes per batch.</summary>
    public int BatchSize { get; }

    /// <summary>The scenes of batch <paramref name="index"/>.</summary>
    public IReadOnlyList<SceneSpec> Batch(long index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        long start = index * BatchSize;
        if (_stream is null || _position > start)
        {
            _stream = ShapeScenes.TrainingScenes(_seed).GetEnumerator();
            _position = 0;
        }
        while (_position < start) { _stream.MoveNext(); _position++; }
        var batch = new SceneSpec[BatchSize];
        for (int i = 0; i < BatchSize; i++)
        {
            _stream.MoveNext();
            batch[i] = _stream.Current;
            _position++;
        }
        return batch;
    }
}
