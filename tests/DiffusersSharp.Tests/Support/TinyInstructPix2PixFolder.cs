using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusionXL;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// InstructPix2Pix pipeline folders written for tests: SD 1.x (model_index.json StableDiffusionInstructPix2PixPipeline,
/// as timbrooks/instruct-pix2pix: tiny-sd15 with Euler ancestral and the 8-channel UNet of fixture
/// local-diffusers/instruct-pix2pix) and SDXL (StableDiffusionXLInstructPix2PixPipeline, as
/// diffusers/sdxl-instructpix2pix-768: tiny-sdxl with its Euler scheduler, text encoders and the 8-channel UNet of fixture
/// local-diffusers/sdxl-instruct-pix2pix). Each UNet holds its source's weights and that fixture's conv_in.
/// </summary>
public static class TinyInstructPix2PixFolder
{
    /// <summary>Writes the SD 1.x folder at <paramref name="dir"/>.</summary>
    public static void Write(string dir) => TinyModelVariant.Write(dir, "tiny-sd15/model", StableDiffusionInstructPix2PixPipeline.PipelineClass,
        "EulerAncestralDiscreteScheduler", unet => unet["in_channels"] = 8, "conv_in.weight",
        Fixtures.Expected("local-diffusers/instruct-pix2pix/expected.safetensors")["in.unet8.conv_in.weight"]);

    /// <summary>Writes the SDXL folder at <paramref name="dir"/>.</summary>
    public static void WriteXL(string dir) => TinyModelVariant.Write(dir, "tiny-sdxl/model", StableDiffusionXLInstructPix2PixPipeline.PipelineClass,
        "EulerDiscreteScheduler", unet => unet["in_channels"] = 8, "conv_in.weight",
        Fixtures.Expected("local-diffusers/sdxl-instruct-pix2pix/expected.safetensors")["in.unet8.conv_in.weight"]);
}
