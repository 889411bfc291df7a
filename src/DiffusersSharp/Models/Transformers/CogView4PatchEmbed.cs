using TorchSharp;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// diffusers' <c>CogView4PatchEmbed</c>: latents [B, C, H, W] cut into p × p patches, each flattened channel-major
/// (C, p, p) and projected by <c>proj</c>; the text states projected by <c>text_proj</c> to the same width. No positions
/// (the blocks add rotary ones).
/// </summary>
public sealed class CogView4PatchEmbed : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear proj;
    private readonly Linear text_proj;
#pragma warning restore IDE1006
    private readonly int _patchSize;

    /// <summary>Creates the embedding of <paramref name="inChannels"/>-channel latents and <paramref name="textHiddenSize"/>-wide text into <paramref name="hiddenSize"/>.</summary>
    public CogView4PatchEmbed(int inChannels, long hiddenSize, int patchSize, long textHiddenSize, Device? device = null, ScalarType? dtype = null)
        : base(nameof(CogView4PatchEmbed))
    {
        _patchSize = patchSize;
        proj = new Linear((long)inChannels * patchSize * patchSize, hiddenSize, hasBias: true, device: device, dtype: dtype);
        text_proj = new Linear(textHiddenSize, hiddenSize, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Returns the image tokens [B, (H/p)(W/p), D] (row-major over the patch grid) and the text tokens [B, S, D].</summary>
    public (Tensor Image, Tensor Text) forward(Tensor hiddenStates, Tensor encoderHiddenStates)
    {
        using var scope = NewDisposeScope();
        long b = hiddenStates.shape[0], c = hiddenStates.shape[1];
        long h = hiddenStates.shape[2] / _patchSize, w = hiddenStates.shape[3] / _patchSize;
        var patches = hiddenStates.reshape(b, c, h, _patchSize, w, _patchSize).permute(0, 2, 4, 1, 3, 5).flatten(3, 5).flatten(1, 2);
        var image = proj.forward(patches);
        var text = text_proj.forward(encoderHiddenStates);
        return (image.MoveToOuterDisposeScope(), text.MoveToOuterDisposeScope());
    }
}
