using DiffusersSharp.Pipelines.StableDiffusion;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// A latent consistency model folder (model_index.json LatentConsistencyModelPipeline, as SimianLuo/LCM_Dreamshaper_v7)
/// written for tests: tiny-sd15 with the LCMScheduler and the time_cond_proj_dim 32 UNet of fixture local-diffusers/lcm
/// (tiny-sd15's weights, that fixture's cond_proj).
/// </summary>
public static class TinyLcmFolder
{
    /// <summary>Writes the folder at <paramref name="dir"/>.</summary>
    public static void Write(string dir) => TinyModelVariant.Write(dir, "tiny-sd15/model", LatentConsistencyModelPipeline.PipelineClass, "LCMScheduler",
        unet => unet["time_cond_proj_dim"] = 32, "time_embedding.cond_proj.weight",
        Fixtures.Expected("local-diffusers/lcm/expected.safetensors")["in.cond_proj.weight"]);
}
