namespace DiffusersSharp.Pipelines;

/// <summary>How image-to-image and inpainting strength selects the tail of a schedule (diffusers' <c>get_timesteps</c>).</summary>
internal static class Strength
{
    /// <summary>
    /// The first step index that <paramref name="strength"/> keeps of <paramref name="numInferenceSteps"/>:
    /// <c>int(max(N - min(N · strength, N), 0))</c> (for a first-order scheduler).
    /// </summary>
    public static int StartStep(int numInferenceSteps, double strength)
    {
        double initTimestep = Math.Min(numInferenceSteps * strength, numInferenceSteps);
        return (int)Math.Max(numInferenceSteps - initTimestep, 0);
    }

    /// <summary>
    /// The same for the SD 1.x / 2.x and SDXL pipelines, whose <c>get_timesteps</c> truncates first:
    /// <c>init = min(int(N · strength), N)</c>, start = <c>max(N - init, 0) · order</c>. The two differ where N · strength is
    /// not whole (N 10, strength 0.75: 3 here, 2 above), as they do in diffusers.
    /// </summary>
    public static int UNetStartStep(int numInferenceSteps, double strength, int schedulerOrder)
    {
        int initTimestep = Math.Min((int)(numInferenceSteps * strength), numInferenceSteps);
        return Math.Max(numInferenceSteps - initTimestep, 0) * schedulerOrder;
    }

    /// <summary>Throws unless <paramref name="strength"/> is in [0, 1] (NaN included).</summary>
    public static void Check(double strength)
    {
        if (!(strength >= 0 && strength <= 1))
            throw new ArgumentException($"strength must be in [0, 1], got {strength}.");
    }

    /// <summary>
    /// <see cref="StartStep"/>, refusing a <paramref name="strength"/> that leaves no step of <paramref name="total"/> to run
    /// (diffusers fails later, on an empty schedule).
    /// </summary>
    /// <exception cref="ArgumentException">No step is left.</exception>
    public static int CheckedStartStep(int total, double strength)
    {
        int start = StartStep(total, strength);
        if (total - start < 1)
            throw new ArgumentException($"strength {strength} with {total} steps leaves {total - start} steps to run; raise strength or steps.");
        return start;
    }

    /// <summary>Throws unless <paramref name="count"/> images (named <paramref name="name"/>s in the message) repeat evenly to
    /// a batch of <paramref name="batch"/>, as diffusers' pipelines repeat their image latents.</summary>
    public static void CheckRepeatsToBatch(long count, long batch, string name = "image")
    {
        if (count > batch || batch % count != 0)
            throw new ArgumentException($"Cannot repeat {count} {name}s to a batch of {batch} (prompts x images per prompt).");
    }
}
