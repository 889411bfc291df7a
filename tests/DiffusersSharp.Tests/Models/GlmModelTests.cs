using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// GlmModel (CogView4's text encoder) against transformers' OWN modeling_glm.py (4.47's, run unmodified by
/// tools/reference/glm.py; fixture local-diffusers/glm, see its README): a tiny GLM with grouped-query attention, q / k / v
/// biases, half of each head rotary (interleaved pairs) and a left-padded batch run without a mask, as CogView4 runs it;
/// every hidden state transformers' output_hidden_states gives (the pipeline takes [-2]) in float32 and bfloat16, and the
/// full-size GLM-4-9B built on meta.
/// </summary>
public sealed class GlmModelTests(ITestOutputHelper output) : IDisposable
{
    private const string Folder = "local-diffusers/glm";
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected(Folder + "/expected.safetensors");
    private readonly GlmModel _model = GlmModel.FromPretrained(Fixtures.Path(Folder + "/text_encoder"));

    /// <summary>Bound: 1e-5 × max(1, max |expected|), as the other text encoders' parity tests (transformers' float32 run is
    /// within 1.4e-6 of its float64 run).</summary>
    private const double Tolerance = 1e-5;

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(-2)]
    [InlineData(-1)]
    public void EveryHiddenStateMatchesTransformers(int index)
    {
        using var _ = inference_mode();
        int k = index < 0 ? 4 + index : index;
        using var hidden = _model.HiddenState(_expected["ids"], index);
        double err = TensorAssert.Close(hidden, _expected[$"hidden.{k}"], Tolerance, $"hidden_states[{index}]");
        output.WriteLine($"hidden_states[{index}]: max |diff| vs transformers {err:G3}");
        if (k == 3)
        {
            using var last = _model.Forward(_expected["ids"]);
            Assert.True(last.equal(hidden).all().item<bool>(), "Forward is hidden_states[-1]");
        }
    }

    /// <summary>
    /// In bfloat16 (weights and activations) ours is no further from transformers' float64 run than twice transformers'
    /// own bfloat16 run is (relative L2; floor 0.005). Measured in the script: transformers' bfloat16 0.0015 to 0.0094.
    /// </summary>
    [Fact]
    public void Bfloat16IsAsCloseAsTransformersOwn()
    {
        using var _ = inference_mode();
        using var model = GlmModel.FromPretrained(Fixtures.Path(Folder + "/text_encoder"), ScalarType.BFloat16);
        for (int k = 0; k < 4; k++)
        {
            using var hidden = model.HiddenState(_expected["ids"], k);
            Assert.Equal(ScalarType.BFloat16, hidden.dtype);
            var reference = _expected[$"hidden64.{k}"].to(ScalarType.Float32);
            double ours = TensorAssert.RelativeL2(hidden.to(ScalarType.Float32), reference);
            double theirs = TensorAssert.RelativeL2(_expected[$"hidden_bf16.{k}"].to(ScalarType.Float32), reference);
            output.WriteLine($"hidden_states[{k}] bfloat16 relative L2 from float64: ours {ours:G3}, transformers' {theirs:G3}");
            Assert.True(ours <= 2 * Math.Max(theirs, 0.005), $"hidden_states[{k}]: bfloat16 {ours:G3} from float64, transformers' {theirs:G3}");
        }
    }

    [Fact]
    public void TheLeftPaddingIsAttendedToAndTheRowsAreIndependent()
    {
        // No mask: the pads are ordinary tokens to the later positions (as in transformers without a mask), so the second
        // row alone gives the batch's second row, and changing a pad changes the first row's outputs after it.
        using var _ = inference_mode();
        var ids = _expected["ids"];
        using var batch = _model.HiddenState(ids, -2);
        using var second = _model.HiddenState(ids[1..], -2);
        TensorAssert.Close(second, batch[1..], 1e-6, "second row alone");
        using var changed = ids.clone();
        changed[0, 0] = tensor(7L);
        using var other = _model.HiddenState(changed, -2);
        Assert.True((other[0, -1] - batch[0, -1]).abs().max().item<float>() > 1e-4, "the pad at position 0 does not reach the last token");
    }

    [Fact]
    public void FullSizeGlm4HasItsParameterCount()
    {
        // GLM-4-9B's decoder (glm-4-9b-hf's config as we recall it: 40 layers, 4096 wide, 32 / 2 heads of 128,
        // intermediate 13696, vocabulary 151552, q / k / v biases): embedding 151552·4096, per layer q 4096·4096 + 4096,
        // k and v 4096·256 + 256 each, o 4096·4096, gate_up 4096·27392, down 13696·4096, two norms, and the final norm.
        using var model = new GlmModel(new GlmConfig(), new Device(DeviceType.META));
        long perLayer = 4096L * 4096 + 4096 + 2 * (4096L * 256 + 256) + 4096L * 4096 + 4096L * 27392 + 13696L * 4096 + 2 * 4096;
        long expected = 151552L * 4096 + 40 * perLayer + 4096;
        long actual = model.parameters().Sum(p => p.numel());
        output.WriteLine($"GLM-4-9B decoder: {actual:N0} parameters");
        Assert.Equal(expected, actual);
    }

    [Fact]
    public void BadInputsAreRefused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => _model.HiddenState(_expected["ids"], 4));
        Assert.Throws<ArgumentOutOfRangeException>(() => _model.HiddenState(_expected["ids"], -5));
        Assert.Throws<ArgumentException>(() => _model.HiddenState(_expected["ids"].to(ScalarType.Float32), -2));
        Assert.Throws<ArgumentException>(() => _model.HiddenState(full([1, 3], 80L), -2)); // past the vocabulary
        Assert.Contains("partial_rotary_factor", Assert.Throws<ArgumentException>(() => new GlmModel(new GlmConfig { PartialRotaryFactor = 0.01 }, new Device(DeviceType.META))).Message);
    }

    public void Dispose()
    {
        _model.Dispose();
        foreach (var t in _expected.Values) t.Dispose();
    }
}
