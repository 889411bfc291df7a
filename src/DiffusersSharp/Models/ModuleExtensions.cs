using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models;

/// <summary>What diffusers reads off a model as <c>model.dtype</c> / <c>model.device</c>.</summary>
public static class ModuleExtensions
{
    /// <summary>The dtype of the model's first floating-point parameter (diffusers' <c>ModelMixin.dtype</c>).</summary>
    public static ScalarType WeightDtype(this nn.Module module) =>
        module.parameters().Select(p => p.dtype).FirstOrDefault(t => t is ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Float64, ScalarType.Float32);

    /// <summary>The device of the model's first parameter.</summary>
    public static Device WeightDevice(this nn.Module module) => module.parameters().FirstOrDefault()?.device ?? CPU;
}
