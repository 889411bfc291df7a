using static TorchSharp.torch;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// What diffusers' <c>Flux2KVAttnProcessor</c> / <c>Flux2KVParallelSelfAttnProcessor</c> take besides the standard
/// processors' inputs: the layer's cache, the mode, and the text / reference token counts of the joint sequence (text first).
/// <see cref="Attend"/> is their attention: in extract mode the sequence is [text, reference, image]: the reference keys
/// and values are stored, text and image queries attend to every token and reference queries to the reference tokens only;
/// in cached mode the sequence is [text, image] and the cached reference keys and values are put between the two.
/// </summary>
internal sealed record Flux2KVAttentionArgs(Flux2KVLayerCache Cache, bool Extract, long TextTokens, long RefTokens)
{
    /// <summary>The attention of rotated q, k, v [B, H, S, d]: [B, H, S, d] in the sequence's own order.</summary>
    public Tensor Attend(Tensor q, Tensor k, Tensor v)
    {
        using var scope = NewDisposeScope();
        long s = TextTokens, r = RefTokens, n = q.shape[2] - s - (Extract ? r : 0);
        Tensor o;
        if (Extract)
        {
            var kRef = k.narrow(2, s, r);
            var vRef = v.narrow(2, s, r);
            Cache.Store(kRef, vRef);
            var textImage = nn.functional.scaled_dot_product_attention(cat([q.narrow(2, 0, s), q.narrow(2, s + r, n)], 2), k, v);
            var reference = nn.functional.scaled_dot_product_attention(q.narrow(2, s, r), kRef, vRef);
            o = cat([textImage.narrow(2, 0, s), reference, textImage.narrow(2, s, n)], 2);
        }
        else
        {
            var (kRef, vRef) = Cache.Get();
            var kAll = cat([k.narrow(2, 0, s), kRef, k.narrow(2, s, n)], 2);
            var vAll = cat([v.narrow(2, 0, s), vRef, v.narrow(2, s, n)], 2);
            o = nn.functional.scaled_dot_product_attention(q, kAll, vAll);
        }
        return o.MoveToOuterDisposeScope();
    }
}
