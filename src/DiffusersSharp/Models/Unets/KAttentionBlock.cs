using DiffusersSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Unets;

/// <summary>
/// diffusers' <c>KAttentionBlock</c> (the K-UNet's attention, no feed-forward): optionally <c>x += attn1(norm1(x, emb))</c>
/// (self-attention), then <c>x += attn2(norm2(x, emb), text)</c>, with <see cref="AdaGroupNorm"/>s of <c>max(1, dim /
/// 32)</c> groups, q/k/v biases and a LayerNorm over the text (<c>cross_attention_norm="layer_norm"</c>), on the
/// channels-last tokens of the feature map.
/// </summary>
public sealed class KAttentionBlock : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly AdaGroupNorm? norm1;
    private readonly Attention? attn1;
    private readonly AdaGroupNorm norm2;
    private readonly Attention attn2;
#pragma warning restore IDE1006

    /// <summary>Builds the block over <paramref name="dim"/> channels: <paramref name="heads"/> heads of <paramref name="headDim"/>.</summary>
    public KAttentionBlock(long dim, int heads, long headDim, long crossAttentionDim, long tembChannels, bool addSelfAttention, long groupSize = 32,
        Device? device = null, ScalarType? dtype = null)
        : base(nameof(KAttentionBlock))
    {
        long groups = Math.Max(1, dim / groupSize);
        if (addSelfAttention)
        {
            norm1 = new AdaGroupNorm(tembChannels, dim, groups, device: device, dtype: dtype);
            attn1 = new Attention(dim, null, heads, headDim, bias: true, device: device, dtype: dtype);
        }
        norm2 = new AdaGroupNorm(tembChannels, dim, groups, device: device, dtype: dtype);
        attn2 = new Attention(dim, crossAttentionDim, heads, headDim, bias: true, device: device, dtype: dtype, crossAttentionNorm: true);
        RegisterComponents();
    }

    /// <summary>Applies the block to <paramref name="hiddenStates"/> [B, C, h, w] with the text and the time embedding <paramref name="emb"/>.</summary>
    public Tensor forward(Tensor hiddenStates, Tensor? encoderHiddenStates, Tensor emb)
    {
        using var scope = NewDisposeScope();
        var x = hiddenStates;
        if (attn1 is not null) x = Attend(attn1, norm1!.forward(x, emb), null) + x;
        x = Attend(attn2, norm2.forward(x, emb), encoderHiddenStates) + x;
        return x.MoveToOuterDisposeScope();
    }

    /// <summary>diffusers' <c>_to_3d</c>, the attention, <c>_to_4d</c>.</summary>
    private static Tensor Attend(Attention attention, Tensor normed, Tensor? encoderHiddenStates)
    {
        long batch = normed.shape[0], channels = normed.shape[1], height = normed.shape[2], width = normed.shape[3];
        var tokens = normed.permute(0, 2, 3, 1).reshape(batch, height * width, channels);
        var attended = attention.forward(tokens, encoderHiddenStates);
        return attended.permute(0, 2, 1).reshape(batch, -1, height, width);
    }
}
