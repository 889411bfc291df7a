namespace DiffusersSharp.IO;

/// <summary>
/// The weights do not fit the model: every missing key, unexpected key and shape mismatch is listed at once, so one run
/// shows the whole difference.
/// </summary>
public sealed class WeightLoadException : Exception
{
    /// <summary>Keys the model needs that the weights lack.</summary>
    public IReadOnlyList<string> Missing { get; }

    /// <summary>Keys in the weights the model does not have.</summary>
    public IReadOnlyList<string> Unexpected { get; }

    /// <summary>Keys whose stored shape differs from the model's.</summary>
    public IReadOnlyList<string> ShapeMismatches { get; }

    /// <summary>Creates the error; the message lists every problem.</summary>
    public WeightLoadException(string model, IReadOnlyList<string> missing, IReadOnlyList<string> unexpected, IReadOnlyList<string> mismatches)
        : base(Describe(model, missing, unexpected, mismatches))
    {
        Missing = missing;
        Unexpected = unexpected;
        ShapeMismatches = mismatches;
    }

    private static string Describe(string model, IReadOnlyList<string> missing, IReadOnlyList<string> unexpected, IReadOnlyList<string> mismatches)
    {
        var parts = new List<string>();
        if (missing.Count > 0) parts.Add($"{missing.Count} missing: {string.Join(", ", missing)}");
        if (unexpected.Count > 0) parts.Add($"{unexpected.Count} unexpected: {string.Join(", ", unexpected)}");
        if (mismatches.Count > 0) parts.Add($"{mismatches.Count} shape mismatches: {string.Join(", ", mismatches)}");
        return $"Weights do not match {model}. {string.Join("; ", parts)}.";
    }
}
