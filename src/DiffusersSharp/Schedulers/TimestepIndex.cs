using static TorchSharp.torch;

namespace DiffusersSharp.Schedulers;

/// <summary>
/// diffusers' <c>index_for_timestep</c> and the sigma pick of the sigma-indexed <c>add_noise</c>, shared by every
/// scheduler that keeps a step index (the Euler and DPM-Solver families, EDM, flow matching, LCM / TCD, IPNDM).
/// </summary>
internal static class TimestepIndex
{
    /// <summary>
    /// The index of <paramref name="timestep"/> in <paramref name="schedule"/>: the second match when it occurs several
    /// times (so a schedule entered midway does not skip a sigma), else the only one; when it is missing,
    /// <paramref name="whenMissing"/> (DPM-Solver takes the last step) or an error naming <paramref name="owner"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The timestep is not in the schedule and <paramref name="whenMissing"/> is null.</exception>
    public static int Find(IReadOnlyList<float> schedule, float timestep, string owner, int? whenMissing = null)
    {
        int first = -1;
        for (int i = 0; i < schedule.Count; i++)
        {
            if (schedule[i] != timestep) continue;
            if (first >= 0) return i;
            first = i;
        }
        if (first >= 0) return first;
        return whenMissing ?? throw new ArgumentException(
            $"Timestep {timestep:R} is not one of the {owner} timesteps; pass a value of TimestepValues.", nameof(timestep));
    }

    /// <summary>
    /// The sigma diffusers' sigma-based <c>add_noise</c> noises <paramref name="originalSamples"/> with, as a [B, 1, ...]
    /// tensor in the samples' dtype and device: the sigma at <paramref name="timestepIndex"/> when no begin index is
    /// set, else at the step index, else at the begin index. Checks the noise's shape first.
    /// </summary>
    /// <exception cref="ArgumentException">The noise's shape differs from the samples'.</exception>
    /// <exception cref="InvalidOperationException">The index is past the end of <paramref name="sigmas"/>.</exception>
    public static Tensor SigmaForNoise(float[] sigmas, int? beginIndex, int? stepIndex, Func<int> timestepIndex, Tensor originalSamples, Tensor noise)
    {
        ArgumentNullException.ThrowIfNull(originalSamples);
        ArgumentNullException.ThrowIfNull(noise);
        if (!originalSamples.shape.SequenceEqual(noise.shape))
            throw new ArgumentException($"noise shape [{string.Join(",", noise.shape)}] differs from sample shape [{string.Join(",", originalSamples.shape)}].", nameof(noise));
        int index = beginIndex is null ? timestepIndex() : stepIndex ?? beginIndex.Value;
        if (index >= sigmas.Length)
            throw new InvalidOperationException($"Step index {index} is past the end of the schedule ({sigmas.Length} sigmas).");
        using var scope = NewDisposeScope();
        var dev = originalSamples.device;
        var table = tensor(sigmas, ScalarType.Float32).to(dev).to(originalSamples.dtype);
        var sigma = table.index_select(0, full(new[] { originalSamples.shape[0] }, (long)index, ScalarType.Int64, dev)).flatten();
        while (sigma.dim() < originalSamples.dim()) sigma = sigma.unsqueeze(-1);
        return sigma.MoveToOuterDisposeScope();
    }
}
