using DiffusersSharp.Pipelines;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Support;

/// <summary>Attention-mask checks of the masked-prompt pipelines' prompt-encoding tests (Sana, Lumina-Image 2.0).</summary>
public static class MaskAssert
{
    /// <summary>Our mask is int64 as diffusers' (the tokenizer's), and equal to it position by position.</summary>
    public static void Equal(Tensor actual, Tensor expected, string key)
    {
        Assert.Equal(ScalarType.Int64, actual.dtype);
        Assert.Equal(expected.shape, actual.shape);
        using var a = actual.to(ScalarType.Int64);
        using var e = expected.to(ScalarType.Int64);
        using var differ = a.ne(e).sum();
        Assert.True(differ.item<long>() == 0, $"{key}: masks differ at {differ.item<long>()} positions");
    }

    /// <summary>
    /// The deliberate difference with several prompts and <paramref name="imagesPerPrompt"/> images each: diffusers tiles
    /// the masks (<c>repeat(n, 1)</c>: [m0, m1, m0, m1]) next to embeddings repeated per prompt ([e0, e0, e1, e1]); ours
    /// are [m0, m0, m1, m1], each with its own prompt. Also asserts that the case tells the two orders apart.
    /// </summary>
    public static void PerPromptOrderOfTiled(Tensor actual, Tensor diffusersTiled, int imagesPerPrompt, string key)
    {
        using var tiled = diffusersTiled.to(ScalarType.Int64);
        long rows = tiled.shape[0], width = tiled.shape[1];
        using var perPrompt = tiled.view(imagesPerPrompt, rows / imagesPerPrompt, width).transpose(0, 1).reshape(rows, width);
        Assert.Equal(ScalarType.Int64, actual.dtype);
        Assert.True(actual.equal(perPrompt).all().item<bool>(), $"{key}: not diffusers' masks repeated per prompt");
        Assert.False(actual.equal(tiled).all().item<bool>(), $"{key}: the case no longer tells the two orders apart");
    }

    /// <summary>
    /// A case of several prompts with <paramref name="imagesPerPrompt"/> images each: embeddings (both sides) within
    /// <paramref name="tolerance"/> × max(1, max |expected|) of diffusers' <c>CASE/…</c> tensors, masks diffusers' in the per-prompt
    /// order (<see cref="PerPromptOrderOfTiled"/>).
    /// </summary>
    public static void PromptsAndImagesDifferOnlyInMaskOrder(MaskedPromptEmbeddings got, IReadOnlyDictionary<string, Tensor> expected,
        string name, int imagesPerPrompt, double tolerance, ITestOutputHelper output)
    {
        double embeds = TensorAssert.Close(got.PromptEmbeds, expected[$"{name}/prompt_embeds"], tolerance, $"{name}/prompt_embeds");
        double negative = TensorAssert.Close(got.NegativePromptEmbeds!, expected[$"{name}/negative_prompt_embeds"], tolerance, $"{name}/negative_prompt_embeds");
        foreach (var (actual, key) in new[] { (got.PromptAttentionMask, "prompt_attention_mask"), (got.NegativePromptAttentionMask!, "negative_prompt_attention_mask") })
            PerPromptOrderOfTiled(actual, expected[$"{name}/{key}"], imagesPerPrompt, key);
        output.WriteLine($"{name}: prompt_embeds max abs {embeds:G3}, negative_prompt_embeds max abs {negative:G3}, masks = diffusers' re-ordered per prompt");
    }
}
