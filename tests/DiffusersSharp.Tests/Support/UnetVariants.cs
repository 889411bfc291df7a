using DiffusersSharp.Models.Unets;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Support;

/// <summary>UNets derived from a fixture's UNet, as the reference scripts derive them for diffusers.</summary>
public static class UnetVariants
{
    /// <summary>
    /// A copy of <paramref name="unet"/> taking <paramref name="inChannels"/> input channels (inpainting's 9,
    /// InstructPix2Pix's 8): every weight the source's except <c>conv_in.weight</c>, which is <paramref name="convIn"/>
    /// (the script's drawn tensor). In eval mode; the caller disposes it.
    /// </summary>
    public static UNet2DConditionModel WithConvIn(UNet2DConditionModel unet, int inChannels, Tensor convIn)
    {
        var variant = new UNet2DConditionModel(unet.Config with { InChannels = inChannels });
        using (no_grad())
        {
            var source = unet.state_dict();
            foreach (var (name, parameter) in variant.named_parameters())
                parameter.copy_(name == "conv_in.weight" ? convIn : source[name]);
        }
        variant.eval();
        return variant;
    }
}
