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

    /// <summary>Throws unless <paramref name="strength"/> is in [0, 1] (NaN included).</summary>
    public static void Check(double strength)
    {
        if (!(strength >= 0 && strength <= 1))
            throw new ArgumentException($"strength must be in [0, 1], got {strength}.");
    }
}
