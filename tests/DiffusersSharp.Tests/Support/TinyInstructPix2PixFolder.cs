using DiffusersSharp.Pipelines.StableDiffusion;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// An InstructPix2Pix pipeline folder (model_index.json StableDiffusionInstructPix2PixPipeline, as
/// timbrooks/instruct-pix2pix) written for tests: tiny-sd15 with Euler ancestral and the 8-channel UNet of fixture
/// local-diffusers/instruct-pix2pix (tiny-sd15's weights, that fixture's conv_in).
/// </summary>
public static class TinyInstructPix2PixFolder
{
    /// <summary>Writes the folder at <paramref name="dir"/>.</summary>
    public static void Write(string dir) => TinySd15Variant.Write(dir, StableDiffusionInstructPix2PixPipeline.PipelineClass,
        "EulerAncestralDiscreteScheduler", unet => unet["in_channels"] = 8, "conv_in.weight",
        Fixtures.Expected("local-diffusers/instruct-pix2pix/expected.safetensors")["in.unet8.conv_in.weight"]);
}
