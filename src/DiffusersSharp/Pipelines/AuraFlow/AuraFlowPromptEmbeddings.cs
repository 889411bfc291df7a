using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.AuraFlow;

/// <summary>What <see cref="AuraFlowPipeline.EncodePrompt"/> returns: the embeddings of diffusers' <c>encode_prompt</c>
/// (its masks are left out: nothing reads them). Owns the tensors.</summary>
/// <param name="PromptEmbeds">[B·n, S, d_model] UMT5 embeddings with the padded positions zeroed, n images per prompt.</param>
/// <param name="NegativePromptEmbeds">The negative side under guidance (the prompt's length), else null.</param>
public sealed record AuraFlowPromptEmbeddings(Tensor PromptEmbeds, Tensor? NegativePromptEmbeds) : IDisposable
{
    /// <summary>Frees the tensors.</summary>
    public void Dispose()
    {
        PromptEmbeds.Dispose();
        NegativePromptEmbeds?.Dispose();
    }
}
