using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines;

/// <summary>
/// What the <c>encode_prompt</c> of the pipelines whose text embeddings travel with an attention mask returns (Sana's,
/// Lumina-Image 2.0's: diffusers' four-tensor tuple). Owns the tensors.
/// </summary>
/// <param name="PromptEmbeds">[B·n, S, D] text embeddings, n images per prompt.</param>
/// <param name="PromptAttentionMask">[B·n, S] int64 mask (1 = token).</param>
/// <param name="NegativePromptEmbeds">The negative side under guidance, else null.</param>
/// <param name="NegativePromptAttentionMask">Its mask, else null.</param>
public sealed record MaskedPromptEmbeddings(Tensor PromptEmbeds, Tensor PromptAttentionMask, Tensor? NegativePromptEmbeds,
    Tensor? NegativePromptAttentionMask) : IDisposable
{
    /// <summary>Frees the tensors.</summary>
    public void Dispose()
    {
        PromptEmbeds.Dispose();
        PromptAttentionMask.Dispose();
        NegativePromptEmbeds?.Dispose();
        NegativePromptAttentionMask?.Dispose();
    }
}
