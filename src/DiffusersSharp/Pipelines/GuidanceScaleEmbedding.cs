using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines;

/// <summary>
/// diffusers' <c>get_guidance_scale_embedding</c>: the sinusoidal embedding of a guidance weight that guidance-distilled
/// UNets (<c>time_cond_proj_dim</c>, e.g. LCM) take as <c>timestep_cond</c> instead of running classifier-free guidance.
/// </summary>
public static class GuidanceScaleEmbedding
{
    /// <summary>
    /// The embedding of <c>w = guidanceScale - 1</c> (as the pipelines compute it), repeated <paramref name="count"/> times:
    /// <c>[sin(1000 w f), cos(1000 w f)]</c> with <c>f = exp(-i log(10000) / (half - 1))</c>, i &lt; half = dim / 2, a zero
    /// column appended for an odd width; computed in float32 as diffusers does, then converted to <paramref name="dtype"/>.
    /// Returns [<paramref name="count"/>, <paramref name="embeddingDim"/>].
    /// </summary>
    /// <exception cref="ArgumentException">A count below 1, a width below 4 (diffusers divides by half - 1), or a non-finite scale.</exception>
    public static Tensor Create(double guidanceScale, int count, int embeddingDim, ScalarType dtype = ScalarType.Float32, Device? device = null)
    {
        if (count < 1) throw new ArgumentException($"The embedding count must be at least 1, got {count}.", nameof(count));
        if (embeddingDim < 4) throw new ArgumentException($"The guidance embedding width (time_cond_proj_dim) must be at least 4, got {embeddingDim}.", nameof(embeddingDim));
        if (!double.IsFinite(guidanceScale)) throw new ArgumentException($"guidance_scale must be a finite number, got {guidanceScale}.", nameof(guidanceScale));
        using var scope = NewDisposeScope();
        // torch.tensor(guidance_scale - 1): the Python float difference, stored as float32; then w * 1000.0 in float32.
        var w = tensor((float)(guidanceScale - 1), ScalarType.Float32).repeat(count) * 1000.0;
        int half = embeddingDim / 2;
        var step = log(tensor(10000.0f)) / (half - 1);
        var freqs = exp(arange(half, ScalarType.Float32) * -step);
        var args = w.unsqueeze(1) * freqs.unsqueeze(0);
        var emb = cat([sin(args), cos(args)], 1);
        if (embeddingDim % 2 == 1) emb = nn.functional.pad(emb, [0, 1]);
        return emb.to(dtype, device ?? CPU).MoveToOuterDisposeScope();
    }
}
