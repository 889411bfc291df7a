using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// The causal frame cache of the Qwen-Image VAE (diffusers' <c>feat_cache</c> / <c>feat_idx</c> lists): one slot per
/// causal-convolution site, in the order a chunk of frames visits them, holding the last (up to two) frames that site saw,
/// so the next chunk's convolutions see them as their past instead of zero padding. An upsampling site's first visit
/// leaves a "repeat" mark instead (diffusers' <c>"Rep"</c>): its first frame has no past to double in time. Owns the
/// cached tensors.
/// </summary>
internal sealed class QwenImageFeatureCache : IDisposable
{
    private readonly List<Tensor?> _frames = [];
    private readonly HashSet<int> _repeatMarks = [];
    private int _index;

    /// <summary>Starts a chunk: the sites are visited again from the first.</summary>
    public void StartChunk() => _index = 0;

    /// <summary>The next site's slot index (diffusers' <c>feat_idx[0]</c>, then <c>+= 1</c>).</summary>
    public int Next()
    {
        while (_frames.Count <= _index) _frames.Add(null);
        return _index++;
    }

    /// <summary>Whether the slot is empty (neither frames nor a repeat mark).</summary>
    public bool IsEmpty(int slot) => _frames[slot] is null && !_repeatMarks.Contains(slot);

    /// <summary>Whether the slot holds diffusers' <c>"Rep"</c> mark.</summary>
    public bool IsRepeat(int slot) => _repeatMarks.Contains(slot);

    /// <summary>The frames the slot holds, or null.</summary>
    public Tensor? Frames(int slot) => _frames[slot];

    /// <summary>Marks the slot <c>"Rep"</c> (freeing what it held).</summary>
    public void MarkRepeat(int slot)
    {
        _frames[slot]?.Dispose();
        _frames[slot] = null;
        _repeatMarks.Add(slot);
    }

    /// <summary>Stores <paramref name="frames"/> (kept beyond any dispose scope) in the slot, freeing what it held.</summary>
    public void Store(int slot, Tensor frames)
    {
        _frames[slot]?.Dispose();
        _repeatMarks.Remove(slot);
        _frames[slot] = frames.DetachFromDisposeScope();
    }

    /// <summary>
    /// One causal convolution site as diffusers' blocks run it: the input's last frames (up to two; with one, the slot's
    /// last frame before it) become the slot's new content, and <paramref name="conv"/> runs with the slot's old content
    /// as its past.
    /// </summary>
    public Tensor Convolve(QwenImageCausalConv3d conv, Tensor x)
    {
        int slot = Next();
        var past = Frames(slot);
        long keep = Math.Min(2, x.shape[2]);
        var cacheX = x.narrow(2, x.shape[2] - keep, keep).clone();
        if (cacheX.shape[2] < 2 && past is not null) cacheX = cat([past.narrow(2, past.shape[2] - 1, 1).to(cacheX.device), cacheX], 2);
        var y = conv.forward(x, past);
        Store(slot, cacheX);
        return y;
    }

    /// <summary>Frees every cached tensor.</summary>
    public void Dispose()
    {
        foreach (var t in _frames) t?.Dispose();
        _frames.Clear();
        _repeatMarks.Clear();
    }
}
