using DiffusersSharp.Images;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// A FLUX.1-Canny / Depth-style control LoRA on a FLUX.1-dev-style transformer, against diffusers 0.36.0's own
/// load_lora_weights + set_adapters + fuse_lora (fixture local-diffusers/flux-lora-layouts, made by
/// tools/reference/flux_lora_layouts.py on torch 1.13 CPU, float32): x_embedder's lora_A is 128 wide on local-diffusers/flux's
/// 64-wide x_embedder, so the weight is widened with zero columns and in_channels becomes 128; lora_B biases; QK-norm weights
/// replaced. Then a regular LoRA (x_embedder's lora_A 64 wide, zero-padded) fused beside it. Every changed weight, and
/// FluxControlPipeline on the result (every step's latents and the image, with local-diffusers/flux-control's prompt
/// embeddings) are compared; weights within 1e-6 x max(1, |expected|) (float32 rounding of W + B A), the pipeline within the
/// Flux parity tests' 5e-5.
/// </summary>
public sealed class FluxControlLoraParityTests(ITestOutputHelper output) : IDisposable
{
    private const string Folder = "local-diffusers/flux-lora-layouts";
    private static readonly ImageBuffer Control = ImageFile.LoadRgb(Fixtures.Path("local-diffusers/controlnet/control.png"));
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected($"{Folder}/expected.safetensors");
    private readonly Dictionary<string, Tensor> _prompt = Fixtures.Expected("local-diffusers/flux-control/expected.safetensors");

    public void Dispose()
    {
        foreach (var t in _expected.Values.Concat(_prompt.Values)) t.Dispose();
    }

    [Theory]
    [InlineData("control")]
    [InlineData("both")]
    public void ControlLoraMatchesDiffusers(string name)
    {
        using var components = LocalDiffusersFlux.Components();
        var model = components.Transformer;
        var before = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        Assert.Equal(6, components.FuseLora(Fixtures.Path($"{Folder}/control.safetensors"), 0.75));
        if (name == "both") Assert.Equal(2, components.FuseLora(Fixtures.Path($"{Folder}/regular.safetensors"), 1.0));
        Assert.Equal((128, 64), (model.Config.InChannels, model.Config.OutChannelsOrIn));

        double worst = 0;
        int changed = 0;
        foreach (var (key, parameter) in model.named_parameters())
        {
            if (_expected.TryGetValue($"{name}.{key}", out var expected))
            {
                worst = Math.Max(worst, TensorAssert.Close(parameter, expected, 1e-6, key));
                changed++;
            }
            else Assert.True(TensorAssert.MaxAbsDiff(parameter, before[key]) == 0, $"{key} changed; diffusers leaves it");
        }
        Assert.Equal(_expected.Keys.Count(k => k.StartsWith($"{name}.", StringComparison.Ordinal) && !k.StartsWith($"{name}.t2i.", StringComparison.Ordinal)), changed);

        using var pipe = new FluxControlPipeline(components);
        Assert.True(pipe.TakesControlImage);
        FluxParity.Check(r => pipe.Generate(r), new FluxControlRequest
        {
            ControlImage = Control, Height = 64, Width = 64, NumInferenceSteps = 4,
            PromptEmbeds = _prompt["in.prompt_embeds"], PooledPromptEmbeds = _prompt["in.pooled"],
        }, _expected, $"{name}.t2i", 42, 5e-5, output);
        output.WriteLine($"{name}: {changed} weights within {worst:G3}");

        // unfuse_lora + unload_lora_weights(reset_to_overwritten_params=True): the 64-wide FLUX.1-dev transformer again.
        components.UnfuseLora();
        Assert.Equal(64, model.Config.InChannels);
        foreach (var (key, value) in before) Assert.True(TensorAssert.MaxAbsDiff(model.named_parameters().Single(p => p.name == key).parameter, value) <= 1e-6, key);
        foreach (var t in before.Values) t.Dispose();
    }
}
