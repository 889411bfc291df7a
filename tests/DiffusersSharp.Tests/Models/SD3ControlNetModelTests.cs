using DiffusersSharp.Models.ControlNets;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// SD3ControlNetModel against diffusers 0.36.0 (fixture local-diffusers/sd3-controlnet, made by
/// tools/reference/sd3_controlnet.py on torch 1.13 CPU, float32): one forward of a tiny ControlNet drawn by diffusers'
/// <c>from_transformer</c> from tiny-sd3 (one joint block with dual attention and QK norm) and of an SD3.5-kind one (no
/// text, two single-stream blocks), and tiny-sd3's transformer with the first one's residuals. Bound: 1e-4 x max(1, max
/// |expected|) as for the other components. Measured: ControlNet residual 2.3e-5 on values up to 35, transformer 1.9e-5
/// (max 7.1; the SD3 transformer's own parity is 5.4e-5), SD3.5 kind 1.4e-6 (max 11.5).
/// </summary>
public sealed class SD3ControlNetModelTests(ITestOutputHelper output)
{
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/sd3-controlnet/expected.safetensors");
    private static string Folder(string name) => Fixtures.Path($"local-diffusers/sd3-controlnet/{name}");

    private void Close(Tensor actual, string key) =>
        output.WriteLine($"{key}: max |diff| {TensorAssert.Close(actual, Expected[key], 1e-4, key):G3}");

    [Fact]
    public void ForwardMatchesDiffusers()
    {
        _ = Expected.Count; // loaded outside the scope below, which would free them
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        using var cn = SD3ControlNetModel.FromPretrained(Folder("controlnet"));
        using var transformer = SD3Transformer2DModel.FromPretrained(Fixtures.Path("tiny-sd3/model/transformer"));
        var (x, cond, ctx, pooled, t) = (Expected["forward.hidden_states"], Expected["forward.controlnet_cond"], Expected["forward.encoder_hidden_states"],
            Expected["forward.pooled_projections"], Expected["forward.timestep"]);
        var residuals = cn.forward(x, cond, 0.7, ctx, pooled, t);
        Assert.Single(residuals);
        Close(residuals[0], "forward.controlnet.block0");
        Close(transformer.forward(x, ctx, pooled, t, block_controlnet_hidden_states: residuals), "forward.transformer");
    }

    [Fact]
    public void Sd35KindForwardMatchesDiffusers()
    {
        _ = Expected.Count; // loaded outside the scope below, which would free them
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        using var cn = SD3ControlNetModel.FromPretrained(Folder("controlnet-sd35"));
        Assert.Null(cn.Config.JointAttentionDim);
        var residuals = cn.forward(Expected["forward.hidden_states"], Expected["forward.controlnet_cond"], 1.3, null,
            Expected["forward.pooled_projections"], Expected["forward.timestep"]);
        Assert.Equal(2, residuals.Count);
        for (int i = 0; i < 2; i++) Close(residuals[i], $"forward.controlnet_sd35.block{i}");
    }

    [Fact]
    public void ResidualsAreSpacedOverTheBlocksAndNoneAfterTheLast()
    {
        // tiny-sd3 has two blocks; the last (context_pre_only) takes no residual. With two residuals block 0 takes the
        // first (interval 1), with one it takes that one (interval 2): the second residual never counts.
        _ = Expected.Count;
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        using var transformer = SD3Transformer2DModel.FromPretrained(Fixtures.Path("tiny-sd3/model/transformer"));
        var (x, ctx, pooled, t) = (Expected["forward.hidden_states"], Expected["forward.encoder_hidden_states"], Expected["forward.pooled_projections"],
            Expected["forward.timestep"]);
        var r = Expected["forward.controlnet.block0"];
        var one = transformer.forward(x, ctx, pooled, t, block_controlnet_hidden_states: [r]);
        var two = transformer.forward(x, ctx, pooled, t, block_controlnet_hidden_states: [r, r * 100]);
        Assert.True(one.eq(two).all().item<bool>());
        Assert.False(one.allclose(transformer.forward(x, ctx, pooled, t)));
    }

    [Fact]
    public void StateDictKeysAreDiffusersKeys()
    {
        using var cn = new SD3ControlNetModel(DiffusersSharp.IO.ConfigJson.Read<SD3ControlNetModelConfig>(Folder("controlnet-sd35") + "/config.json"), new Device("meta"));
        var keys = cn.state_dict().Keys.ToHashSet();
        Assert.Contains("transformer_blocks.1.attn.to_out.0.weight", keys);
        Assert.Contains("pos_embed_input.proj.weight", keys);
        Assert.DoesNotContain("pos_embed_input.pos_embed", keys);
        Assert.DoesNotContain(keys, k => k.StartsWith("context_embedder", StringComparison.Ordinal));
    }

    [Fact]
    public void TextIsRequiredExactlyWhenTheConfigHasIt()
    {
        _ = Expected.Count;
        using var scope = NewDisposeScope();
        using var cn = SD3ControlNetModel.FromPretrained(Folder("controlnet"));
        using var cn35 = SD3ControlNetModel.FromPretrained(Folder("controlnet-sd35"));
        var (x, cond, ctx, pooled, t) = (Expected["forward.hidden_states"], Expected["forward.controlnet_cond"], Expected["forward.encoder_hidden_states"],
            Expected["forward.pooled_projections"], Expected["forward.timestep"]);
        Assert.Throws<ArgumentException>(() => cn.forward(x, cond, 1, null, pooled, t));
        Assert.Throws<ArgumentException>(() => cn35.forward(x, cond, 1, ctx, pooled, t));
        Assert.Throws<ArgumentException>(() => cn.forward(x, cond[..1], 1, ctx, pooled, t));
    }
}
