using DiffusersSharp.Images;
using DiffusersSharp.IO;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// The parameters of a FLUX.1-Redux prior call, with diffusers' names and defaults (<c>FluxPriorReduxPipeline.__call__</c>).
/// Tensors passed in stay owned by the caller (diffusers scales <c>pooled_prompt_embeds</c> in place; here they are not
/// changed).
/// </summary>
public sealed record FluxPriorReduxRequest
{
    /// <summary>One image (diffusers' <c>image</c> as a PIL image); give this or <see cref="Images"/>.</summary>
    public ImageBuffer? Image { get; init; }

    /// <summary>Several images (diffusers' <c>image</c> as a list): their embeddings are weighted by the scales and summed
    /// into one conditioning.</summary>
    public IReadOnlyList<ImageBuffer>? Images { get; init; }

    /// <summary>
    /// diffusers' experimental prompt input: encoded (CLIP-L pooled, T5) by the text encoders the prior was given (see
    /// <see cref="FluxPriorReduxPipeline.FromPretrained(string, PipelineLoadOptions?, FluxComponents?, CancellationToken)"/>),
    /// once per image (one prompt is repeated; a list needs one per image). Without text encoders it is refused (diffusers
    /// ignores it with a warning).
    /// </summary>
    public PromptList? Prompt { get; init; }

    /// <summary>The prompt for T5 (defaults to <see cref="Prompt"/>); needs <see cref="Prompt"/>.</summary>
    public PromptList? Prompt2 { get; init; }

    /// <summary>Precomputed T5 embeddings [images, S, txt_in_features] for the text part, instead of a prompt (used with or
    /// without text encoders; diffusers uses them only when text encoders are loaded).</summary>
    public Tensor? PromptEmbeds { get; init; }

    /// <summary>Precomputed pooled CLIP embeddings [images, P]; required with <see cref="PromptEmbeds"/>.</summary>
    public Tensor? PooledPromptEmbeds { get; init; }

    /// <summary>Weight of each image's text + image tokens in the sum: one value for all images or one per image
    /// (diffusers' <c>prompt_embeds_scale</c>, default 1.0).</summary>
    public OneOrMany<double> PromptEmbedsScale { get; init; } = 1.0;

    /// <summary>Weight of each image's pooled embedding in the sum: one value or one per image (diffusers'
    /// <c>pooled_prompt_embeds_scale</c>, default 1.0).</summary>
    public OneOrMany<double> PooledPromptEmbedsScale { get; init; } = 1.0;

    /// <summary>The images of the request, in order (<see cref="Image"/> as a list of one); null when neither is set.</summary>
    internal IReadOnlyList<ImageBuffer>? AllImages => Image is not null ? [Image] : Images;
}

/// <summary>
/// What FLUX.1-Redux's prior gives (diffusers' <c>FluxPriorReduxPipelineOutput</c>): one conditioning to pass to a Flux
/// pipeline as <see cref="FluxRequest.PromptEmbeds"/> / <see cref="FluxRequest.PooledPromptEmbeds"/> (text-to-image,
/// image-to-image, inpainting and the other requests deriving from <see cref="FluxRequest"/>), with no prompt, as
/// diffusers' <c>pipe(**pipe_prior_output)</c>. The tensors belong to this object.
/// </summary>
/// <param name="PromptEmbeds">[1, text tokens + image tokens, txt_in_features]: the scaled sum over the images of each
/// image's text part (T5 embeddings, or zeros) followed by its image tokens.</param>
/// <param name="PooledPromptEmbeds">[1, P]: the scaled sum of the pooled embeddings (CLIP-L's, or zeros of width 768).</param>
public sealed record FluxPriorReduxOutput(Tensor PromptEmbeds, Tensor PooledPromptEmbeds) : IDisposable
{
    /// <summary>Disposes both tensors.</summary>
    public void Dispose()
    {
        PromptEmbeds.Dispose();
        PooledPromptEmbeds.Dispose();
    }
}
