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
}
