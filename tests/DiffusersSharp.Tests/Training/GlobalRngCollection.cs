namespace DiffusersSharp.Tests.Training;

/// <summary>
/// Tests whose models are initialised from libtorch's global generator run alone: other test classes building random
/// models in parallel would draw from the same generator and change the weights.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class GlobalRngCollection
{
    /// <summary>The collection name.</summary>
    public const string Name = "global torch RNG";
}
