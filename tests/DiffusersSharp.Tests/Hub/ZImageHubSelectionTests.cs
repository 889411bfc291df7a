using DiffusersSharp.Hub;
using DiffusersSharp.IO;

namespace DiffusersSharp.Tests.Hub;

/// <summary>Tongyi-MAI/Z-Image-Turbo's layout: every component is fetched, the sharded Qwen3 text encoder and its
/// tokenizer included.</summary>
public sealed class ZImageHubSelectionTests
{
    [Theory]
    [InlineData("ZImagePipeline")]
    [InlineData("ZImageImg2ImgPipeline")]
    public void TheTextEncoderAndTokenizerAreFetched(string pipelineClass)
    {
        var index = new ModelIndex(pipelineClass, null, new Dictionary<string, ComponentSpec>
        {
            ["scheduler"] = new("diffusers", "FlowMatchEulerDiscreteScheduler"),
            ["text_encoder"] = new("transformers", "Qwen3Model"),
            ["tokenizer"] = new("transformers", "Qwen2Tokenizer"),
            ["transformer"] = new("diffusers", "ZImageTransformer2DModel"),
            ["vae"] = new("diffusers", "AutoencoderKL"),
        });
        string[] repo = ["model_index.json", "scheduler/scheduler_config.json",
            "text_encoder/config.json", "text_encoder/generation_config.json", "text_encoder/model.safetensors.index.json",
            "text_encoder/model-00001-of-00003.safetensors", "text_encoder/model-00002-of-00003.safetensors", "text_encoder/model-00003-of-00003.safetensors",
            "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
            "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors.index.json",
            "transformer/diffusion_pytorch_model-00001-of-00002.safetensors", "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
            "vae/config.json", "vae/diffusion_pytorch_model.safetensors"];
        Assert.Equal(["model_index.json", "scheduler/scheduler_config.json",
            "text_encoder/config.json", "text_encoder/generation_config.json", "text_encoder/model.safetensors.index.json",
            "text_encoder/model-00001-of-00003.safetensors", "text_encoder/model-00002-of-00003.safetensors", "text_encoder/model-00003-of-00003.safetensors",
            "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
            "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors.index.json",
            "transformer/diffusion_pytorch_model-00001-of-00002.safetensors", "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
            "vae/config.json", "vae/diffusion_pytorch_model.safetensors"], HubFileSelector.Select(repo, index, null, "Tongyi-MAI/Z-Image-Turbo"));
        Assert.False(HubFileSelector.IsUnused("text_encoder", pipelineClass));
        Assert.False(HubFileSelector.IsUnused("tokenizer", pipelineClass));

        // Without the text encoder (PipelineLoadOptions.LoadTextEncoders = false): its config only.
        var configOnly = HubFileSelector.Select(repo, index, null, "Tongyi-MAI/Z-Image-Turbo", new HashSet<string> { "text_encoder" });
        Assert.Equal(["text_encoder/config.json", "text_encoder/generation_config.json"], configOnly.Where(f => f.StartsWith("text_encoder/", StringComparison.Ordinal)));
    }
}
