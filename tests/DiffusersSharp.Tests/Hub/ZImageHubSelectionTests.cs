using DiffusersSharp.Hub;
using DiffusersSharp.IO;

namespace DiffusersSharp.Tests.Hub;

/// <summary>Tongyi-MAI/Z-Image-Turbo's layout: until the Qwen3 encoder is wired, its text encoder and tokenizer are not fetched.</summary>
public sealed class ZImageHubSelectionTests
{
    [Theory]
    [InlineData("ZImagePipeline")]
    [InlineData("ZImageImg2ImgPipeline")]
    public void TheTextEncoderAndTokenizerAreNotFetchedYet(string pipelineClass)
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
            "text_encoder/config.json", "text_encoder/model.safetensors.index.json", "text_encoder/model-00001-of-00003.safetensors",
            "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
            "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors.index.json",
            "transformer/diffusion_pytorch_model-00001-of-00002.safetensors", "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
            "vae/config.json", "vae/diffusion_pytorch_model.safetensors"];
        Assert.Equal(["model_index.json", "scheduler/scheduler_config.json",
            "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors.index.json",
            "transformer/diffusion_pytorch_model-00001-of-00002.safetensors", "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
            "vae/config.json", "vae/diffusion_pytorch_model.safetensors"], HubFileSelector.Select(repo, index, null, "Tongyi-MAI/Z-Image-Turbo"));
        Assert.False(HubFileSelector.IsUnused("text_encoder", "FluxPipeline"));
    }
}
