using DiffusersSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models;

/// <summary>What a component class is, as <c>model_index.json</c> names it.</summary>
public enum ComponentKind
{
    /// <summary>A neural network with weights.</summary>
    Model,
    /// <summary>A tokenizer (files, no weights).</summary>
    Tokenizer,
    /// <summary>A scheduler (a config only).</summary>
    Scheduler,
    /// <summary>An image processor (a preprocessing config, <c>preprocessor_config.json</c>, no weights).</summary>
    ImageProcessor,
}

/// <summary>
/// The component classes DiffusersSharp implements, and how to build each model from its config on the <c>meta</c>
/// device (no memory: used to count parameters before any download). An unknown class is a clear error naming it.
/// </summary>
public static class ModelRegistry
{
    private static readonly Dictionary<string, Func<string, Device, nn.Module>> Builders = new(StringComparer.Ordinal)
    {
        ["SD3Transformer2DModel"] = (config, device) => new Transformers.SD3Transformer2DModel(ConfigJson.Read<Transformers.SD3Transformer2DModelConfig>(config), device),
        ["PixArtTransformer2DModel"] = (config, device) => new Transformers.PixArtTransformer2DModel(ConfigJson.Read<Transformers.PixArtTransformer2DModelConfig>(config), device),
        ["SanaTransformer2DModel"] = (config, device) => new Transformers.SanaTransformer2DModel(ConfigJson.Read<Transformers.SanaTransformer2DModelConfig>(config), device),
        ["Lumina2Transformer2DModel"] = (config, device) => new Transformers.Lumina2Transformer2DModel(ConfigJson.Read<Transformers.Lumina2Transformer2DModelConfig>(config), device),
        ["ZImageTransformer2DModel"] = (config, device) => new Transformers.ZImageTransformer2DModel(ConfigJson.Read<Transformers.ZImageTransformer2DModelConfig>(config), device),
        ["FluxTransformer2DModel"] = (config, device) => new Transformers.FluxTransformer2DModel(ConfigJson.Read<Transformers.FluxTransformer2DModelConfig>(config), device),
        ["Flux2Transformer2DModel"] = (config, device) => new Transformers.Flux2Transformer2DModel(ConfigJson.Read<Transformers.Flux2Transformer2DModelConfig>(config), device),
        ["QwenImageTransformer2DModel"] = (config, device) => new Transformers.QwenImageTransformer2DModel(ConfigJson.Read<Transformers.QwenImageTransformer2DModelConfig>(config), device),
        ["AuraFlowTransformer2DModel"] = (config, device) => new Transformers.AuraFlowTransformer2DModel(ConfigJson.Read<Transformers.AuraFlowTransformer2DModelConfig>(config), device),
        ["CogView4Transformer2DModel"] = (config, device) => new Transformers.CogView4Transformer2DModel(ConfigJson.Read<Transformers.CogView4Transformer2DModelConfig>(config), device),
        ["ChromaTransformer2DModel"] = (config, device) => new Transformers.ChromaTransformer2DModel(ConfigJson.Read<Transformers.ChromaTransformer2DModelConfig>(config), device),
        ["AutoencoderKLFlux2"] = (config, device) => new Autoencoders.AutoencoderKLFlux2(ConfigJson.Read<Autoencoders.AutoencoderKLFlux2Config>(config), device),
        ["AutoencoderKLQwenImage"] = (config, device) => new Autoencoders.AutoencoderKLQwenImage(ConfigJson.Read<Autoencoders.AutoencoderKLQwenImageConfig>(config), device),
        ["AutoencoderKL"] = (config, device) => new Autoencoders.AutoencoderKL(ConfigJson.Read<Autoencoders.AutoencoderKLConfig>(config), device),
        ["AutoencoderDC"] = (config, device) => new Autoencoders.AutoencoderDC(ConfigJson.Read<Autoencoders.AutoencoderDCConfig>(config), device),
        ["UNet2DConditionModel"] = (config, device) => new Unets.UNet2DConditionModel(ConfigJson.Read<Unets.UNet2DConditionModelConfig>(config), device),
        ["ControlNetModel"] = (config, device) => new ControlNets.ControlNetModel(ConfigJson.Read<ControlNets.ControlNetModelConfig>(config), device),
        ["ControlNetUnionModel"] = (config, device) => new ControlNets.ControlNetUnionModel(ConfigJson.Read<ControlNets.ControlNetUnionModelConfig>(config), device),
        ["FluxControlNetModel"] = (config, device) => new ControlNets.FluxControlNetModel(ConfigJson.Read<ControlNets.FluxControlNetModelConfig>(config), device),
        ["SD3ControlNetModel"] = (config, device) => new ControlNets.SD3ControlNetModel(ConfigJson.Read<ControlNets.SD3ControlNetModelConfig>(config), device),
        ["T2IAdapter"] = (config, device) => new Adapters.T2IAdapter(ConfigJson.Read<Adapters.T2IAdapterConfig>(config), device),
        ["CLIPTextModel"] = (config, device) => new TextEncoders.CLIPTextModel(ConfigJson.Read<TextEncoders.CLIPTextConfig>(config), device),
        ["CLIPTextModelWithProjection"] = (config, device) => new TextEncoders.CLIPTextModelWithProjection(ConfigJson.Read<TextEncoders.CLIPTextConfig>(config), device),
        ["CLIPVisionModelWithProjection"] = (config, device) => new ImageEncoders.CLIPVisionModelWithProjection(ConfigJson.Read<ImageEncoders.CLIPVisionConfig>(config), device),
        ["SiglipVisionModel"] = (config, device) => new ImageEncoders.SiglipVisionModel(ConfigJson.Read<ImageEncoders.SiglipVisionConfig>(config), device),
        ["ReduxImageEncoder"] = (config, device) => new ImageEncoders.ReduxImageEncoder(ConfigJson.Read<ImageEncoders.ReduxImageEncoderConfig>(config), device),
        ["T5EncoderModel"] = (config, device) => new TextEncoders.T5EncoderModel(ConfigJson.Read<TextEncoders.T5Config>(config), device),
        ["UMT5EncoderModel"] = (config, device) => new TextEncoders.UMT5EncoderModel(ConfigJson.Read<TextEncoders.UMT5Config>(config), device),
        ["Qwen2_5_VLForConditionalGeneration"] = (config, device) => new TextEncoders.Qwen2_5_VLTextModel(TextEncoders.Qwen2_5_VLTextConfig.Read(config), device),
        ["Gemma2Model"] = (config, device) => new TextEncoders.Gemma2Model(ConfigJson.Read<TextEncoders.Gemma2Config>(config), device),
        ["Qwen3Model"] = (config, device) => new TextEncoders.Qwen3Model(ConfigJson.Read<TextEncoders.Qwen3Config>(config), device),
        // FLUX.2 [klein] names the causal LM; only its hidden states are read (lm_head left out).
        ["Qwen3ForCausalLM"] = (config, device) => new TextEncoders.Qwen3Model(ConfigJson.Read<TextEncoders.Qwen3Config>(config), device),
    };

    private static readonly HashSet<string> Tokenizers = new(StringComparer.Ordinal)
    {
        "CLIPTokenizer", "CLIPTokenizerFast", "T5Tokenizer", "T5TokenizerFast", "Qwen2Tokenizer", "Qwen2TokenizerFast",
        "GemmaTokenizer", "GemmaTokenizerFast", "LlamaTokenizer", "LlamaTokenizerFast",
    };

    private static readonly HashSet<string> Schedulers = new(StringComparer.Ordinal)
    {
        "FlowMatchEulerDiscreteScheduler",
        "PNDMScheduler", "DDIMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
        "LMSDiscreteScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "HeunDiscreteScheduler",
        "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "DPMSolverSinglestepScheduler", "DEISMultistepScheduler",
        "LCMScheduler", "DDPMScheduler", "TCDScheduler", "IPNDMScheduler", "EDMEulerScheduler", "EDMDPMSolverMultistepScheduler",
        "SCMScheduler",
    };

    private static readonly HashSet<string> ImageProcessors = new(StringComparer.Ordinal)
    {
        "SiglipImageProcessor",
    };

    /// <summary>Every supported class name.</summary>
    public static IEnumerable<string> KnownClasses => Builders.Keys.Concat(Tokenizers).Concat(Schedulers).Concat(ImageProcessors).Order(StringComparer.Ordinal);

    /// <summary>The kind of <paramref name="className"/>; throws <see cref="UnknownComponentException"/> for an unsupported class.</summary>
    public static ComponentKind KindOf(string component, string className)
    {
        if (Builders.ContainsKey(className)) return ComponentKind.Model;
        if (Tokenizers.Contains(className)) return ComponentKind.Tokenizer;
        if (Schedulers.Contains(className)) return ComponentKind.Scheduler;
        if (ImageProcessors.Contains(className)) return ComponentKind.ImageProcessor;
        throw new UnknownComponentException(component, className, KnownClasses);
    }

    /// <summary>Builds the model of <paramref name="className"/> from <c>config.json</c> in <paramref name="folder"/> on <paramref name="device"/>.</summary>
    public static nn.Module Build(string component, string className, string folder, Device device)
    {
        if (!Builders.TryGetValue(className, out var build)) throw new UnknownComponentException(component, className, KnownClasses);
        return build(Path.Combine(folder, "config.json"), device);
    }
}
