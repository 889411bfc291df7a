using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.ControlNets;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Schedulers;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// The tiny Flux pipeline of fixture local-diffusers/flux as tools/reference/flux.py assembled it for diffusers: that
/// fixture's transformer and scheduler config, tiny-sd3's VAE, no text encoders (prompt embeddings are given).
/// </summary>
public static class LocalDiffusersFlux
{
    /// <summary>
    /// Loads the components, float32 on the CPU; <paramref name="transformer"/> names another fixture's transformer folder
    /// (local-diffusers/flux-fill or flux-kontext, which tools/reference/flux_fill_kontext.py pairs with the same parts);
    /// <paramref name="controlNet"/> a Flux ControlNet folder to load beside them (local-diffusers/flux-controlnet), or
    /// <paramref name="controlNets"/> several, in order.
    /// </summary>
    public static FluxComponents Components(string transformer = "local-diffusers/flux/transformer", string? controlNet = null,
        IReadOnlyList<string>? controlNets = null) => new()
    {
        ControlNets = (controlNets ?? (controlNet is null ? [] : [controlNet])).Select(f => FluxControlNetModel.FromPretrained(Fixtures.Path(f))).ToArray(),
        Transformer = FluxTransformer2DModel.FromPretrained(Fixtures.Path(transformer)),
        Vae = AutoencoderKL.FromPretrained(Fixtures.Path("tiny-sd3/model/vae")),
        SchedulerConfig = ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Fixtures.Path("local-diffusers/flux/scheduler/scheduler_config.json")),
        Device = CPU, Dtype = ScalarType.Float32,
    };
}
