namespace DiffusersSharp.Models.ImageEncoders;

/// <summary>
/// <c>config.json</c> of diffusers' <c>ReduxImageEncoder</c> (pipelines/flux/modeling_flux.py; FLUX.1-Redux-dev's
/// <c>image_embedder</c>). Defaults are the Python constructor defaults (FLUX.1-Redux-dev's sizes).
/// </summary>
public sealed record ReduxImageEncoderConfig
{
    /// <summary>Width of the SigLIP image tokens it takes (1152: google/siglip-so400m-patch14-384's hidden size).</summary>
    public int ReduxDim { get; init; } = 1152;

    /// <summary>Width of the tokens it gives: the Flux transformer's text input (4096: T5 v1.1 XXL's d_model, the
    /// transformer's joint_attention_dim).</summary>
    public int TxtInFeatures { get; init; } = 4096;

    /// <summary>Checks the sizes.</summary>
    /// <exception cref="ArgumentException">A size is not positive.</exception>
    public void Validate()
    {
        if (ReduxDim <= 0) throw new ArgumentException($"ReduxImageEncoder config: redux_dim must be positive, got {ReduxDim}.");
        if (TxtInFeatures <= 0) throw new ArgumentException($"ReduxImageEncoder config: txt_in_features must be positive, got {TxtInFeatures}.");
    }
}
