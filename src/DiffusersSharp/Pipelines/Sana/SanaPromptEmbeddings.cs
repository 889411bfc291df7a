using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Sana;

/// <summary>What <see cref="SanaPipelineBase.EncodePrompt"/> returns (diffusers' <c>encode_prompt</c> tuple). Owns the tensors.</summary>
/// <param name="PromptEmbeds">[B·n, S, caption_channels] Gemma embeddings, n images per prompt.</param>
/// <param name="PromptAttentionMask">[B·n, S] int64 mask (1 = token).</param>
/// <param name="NegativePromptEmbeds">The negative side under guidance, else null.</param>
/// <param name="NegativePromptAttentionMask">Its mask, else null.</param>
public sealed record SanaPromptEmbeddings(Tensor PromptEmbeds, Tensor PromptAttentionMask, Tensor? NegativePromptEmbeds,
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
