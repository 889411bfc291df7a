namespace DiffusersSharp.Pipelines.Sana;

/// <summary>
/// The arguments of a SANA-Sprint call (diffusers' <c>SanaSprintPipeline.__call__</c>), with its defaults: 2 steps, the
/// guidance scale embedded in the transformer (4.5, no negative prompt: <see cref="SanaRequest.NegativePrompt"/> and
/// the negative embeddings are refused), the SCM angles from <see cref="MaxTimesteps"/> with
/// <see cref="IntermediateTimesteps"/> (two steps only; null for other step counts).
/// </summary>
public record SanaSprintRequest : SanaRequest
{
    /// <summary>A request with SANA-Sprint's defaults.</summary>
    public SanaSprintRequest() => NumInferenceSteps = 2;

    /// <summary>The first SCM angle (diffusers' <c>max_timesteps</c>, 1.57080 ≈ π/2).</summary>
    public double MaxTimesteps { get; init; } = 1.57080;

    /// <summary>The middle angle of a two-step run (diffusers' <c>intermediate_timesteps</c>, 1.3); null with other step counts.</summary>
    public double? IntermediateTimesteps { get; init; } = 1.3;
}
