using DiffusersSharp.Models.ImageEncoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// T5EncoderModel and CLIPVisionModelWithProjection against transformers' OWN modeling code (modeling_t5.py,
/// modeling_clip.py run unmodified by tools/reference/t5_clip_vision.py; fixture local-diffusers/transformers-encoders,
/// see its README): T5 in eval mode on tiny-sd3's text_encoder_3 and tokenizer ids, CLIP vision on two tiny encoders
/// stored in the fixture.
/// </summary>
public sealed class TransformersEncodersParityTests(ITestOutputHelper output)
{
    private const string Folder = "local-diffusers/transformers-encoders";
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected(Folder + "/expected.safetensors");

    /// <summary>
    /// Bound: 1e-5 x max(1, max |expected|), as the Flux parity tests. Measured worst: T5 1.3e-5 of 3.2 (long512),
    /// CLIP vision 2.4e-6 of 6.8. The reference itself is that far from a float64 run of the same code (T5 1.2e-5,
    /// CLIP 1.9e-6: float32 rounding of torch 1.13's kernels, see the fixture README).
    /// </summary>
    private const double Tolerance = 1e-5;

    [Theory]
    [InlineData("padded", 6, 256)]  // SD3's 256-token rows (padding attended to, as in SD3), six prompts in one batch
    [InlineData("short", 1, 27)]    // unpadded
    [InlineData("long512", 2, 512)] // T5's 512-token maximum: relative distances far past max_distance 128
    public void T5MatchesTransformersInEvalMode(string name, long batch, long length)
    {
        using var model = T5EncoderModel.FromPretrained(Fixtures.Path("tiny-sd3/model/text_encoder_3"));
        using var _ = inference_mode();
        using var ids = Expected[$"t5.{name}.input_ids"].to(ScalarType.Int64);
        Assert.Equal([batch, length], ids.shape);
        using var last = model.Forward(ids);
        double err = TensorAssert.Close(last, Expected[$"t5.{name}.last_hidden_state"], Tolerance, $"t5.{name}");
        output.WriteLine($"t5.{name} float32 max |diff| vs transformers: {err:G3}");
    }

    /// <summary>
    /// PixArt's encoding: SD3's padded rows under their tokenizer attention mask (1 up to &lt;/s&gt;, 0 on the padding), every
    /// position compared, the masked ones too (diffusers' PixArt pipelines pass them on, masked again in cross-attention).
    /// </summary>
    [Fact]
    public void MaskedT5MatchesTransformers()
    {
        using var model = T5EncoderModel.FromPretrained(Fixtures.Path("tiny-sd3/model/text_encoder_3"));
        using var _ = inference_mode();
        using var ids = Expected["t5.padded.input_ids"].to(ScalarType.Int64);
        using var mask = Expected["t5.masked.attention_mask"].to(ScalarType.Int64);
        Assert.True(mask.sum().item<long>() < mask.numel()); // some positions are masked
        using var last = model.Forward(ids, mask);
        double err = TensorAssert.Close(last, Expected["t5.masked.last_hidden_state"], Tolerance, "t5.masked");
        output.WriteLine($"t5.masked float32 max |diff| vs transformers: {err:G3}");
    }

    [Theory]
    [InlineData("image_encoder", 17)]      // quick_gelu, 2 layers, 4 x 4 patches (the IP-Adapter tests' sizes)
    [InlineData("image_encoder_gelu", 37)] // exact gelu, 3 layers, 6 x 6 patches
    public void ClipVisionMatchesTransformers(string name, long positions)
    {
        using var model = CLIPVisionModelWithProjection.FromPretrained(Fixtures.Path($"{Folder}/{name}"));
        using var _ = inference_mode();
        using var result = model.Forward(Expected[$"{name}.pixel_values"], outputHiddenStates: true);

        Assert.Equal(positions, result.LastHiddenState.shape[1]);
        Assert.Equal(model.Config.NumHiddenLayers + 1, result.HiddenStates.Count);
        double embeds = TensorAssert.Close(result.ImageEmbeds, Expected[$"{name}.image_embeds"], Tolerance, $"{name}.image_embeds");
        double last = TensorAssert.Close(result.LastHiddenState, Expected[$"{name}.last_hidden_state"], Tolerance, $"{name}.last_hidden_state");
        double pen = TensorAssert.Close(result.HiddenStates[^2], Expected[$"{name}.penultimate"], Tolerance, $"{name}.hidden_states[-2]");
        double worst = 0;
        for (int i = 0; i < result.HiddenStates.Count; i++)
            worst = Math.Max(worst, TensorAssert.Close(result.HiddenStates[i], Expected[$"{name}.hidden_states.{i}"], Tolerance, $"{name}.hidden_states[{i}]"));
        output.WriteLine($"{name} float32 max |diff| vs transformers: image_embeds {embeds:G3}, last_hidden_state {last:G3}, " +
                         $"hidden_states[-2] {pen:G3}, all hidden states {worst:G3}");
    }
}
