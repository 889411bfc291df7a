using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines.Chroma;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tokenizers;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// The tiny Chroma pipeline of fixture local-diffusers/chroma as tools/reference/chroma.py assembled it for diffusers: that
/// fixture's transformer and scheduler config and tiny-sd3's VAE; with <c>text</c>, tiny-sd3's T5 (text_encoder_3, width
/// 96 = the transformer's joint_attention_dim) and its tokenizer (tokenizer_3), which the script's prompt case stands in for.
/// </summary>
public static class LocalDiffusersChroma
{
    /// <summary>Loads the components, float32 on the CPU; without <paramref name="text"/> they take prompt embeddings only.</summary>
    public static ChromaComponents Components(bool text = false) => new()
    {
        Transformer = ChromaTransformer2DModel.FromPretrained(Fixtures.Path("local-diffusers/chroma/transformer")),
        Vae = AutoencoderKL.FromPretrained(Fixtures.Path("tiny-sd3/model/vae")),
        TextEncoder = text ? T5EncoderModel.FromPretrained(Fixtures.Path("tiny-sd3/model/text_encoder_3")) : null,
        Tokenizer = text ? T5Tokenizer.FromFolder(Fixtures.Path("tiny-sd3/model/tokenizer_3")) : null,
        SchedulerConfig = ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Fixtures.Path("local-diffusers/chroma/scheduler/scheduler_config.json")),
        Device = CPU, Dtype = ScalarType.Float32,
    };
}
