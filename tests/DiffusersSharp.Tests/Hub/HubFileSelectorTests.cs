using DiffusersSharp.Hub;
using DiffusersSharp.IO;

namespace DiffusersSharp.Tests.Hub;

public sealed class HubFileSelectorTests
{
    private static readonly ModelIndex Index = new("StableDiffusion3Pipeline", null, new Dictionary<string, ComponentSpec>
    {
        ["transformer"] = new("diffusers", "SD3Transformer2DModel"),
        ["text_encoder"] = new("transformers", "CLIPTextModelWithProjection"),
        ["tokenizer"] = new("transformers", "CLIPTokenizer"),
        ["scheduler"] = new("diffusers", "FlowMatchEulerDiscreteScheduler"),
        ["image_encoder"] = new(null, null),
    });

    private static readonly string[] Repo =
    [
        "model_index.json", "README.md", ".gitattributes", "sd3.5_large.safetensors", "text_encoders/clip_l.safetensors",
        "image_encoder/config.json", "image_encoder/model.safetensors",
        "scheduler/scheduler_config.json",
        "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json",
        "text_encoder/config.json", "text_encoder/model.safetensors", "text_encoder/model.fp16.safetensors", "text_encoder/pytorch_model.bin",
        "transformer/config.json",
        "transformer/diffusion_pytorch_model.safetensors.index.json",
        "transformer/diffusion_pytorch_model-00001-of-00002.safetensors", "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
        "transformer/diffusion_pytorch_model.safetensors.index.fp16.json",
        "transformer/diffusion_pytorch_model.fp16-00001-of-00002.safetensors", "transformer/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
        "transformer/diffusion_pytorch_model.bin.index.json", "transformer/diffusion_pytorch_model-00001-of-00002.bin",
        "transformer/diffusion_flax_model.msgpack", "transformer/extra/notes.json",
    ];

    [Fact]
    public void Default_weights_only_with_configs_and_tokenizer_files()
    {
        var files = HubFileSelector.Select(Repo, Index, null, "o/r");
        Assert.Equal(
        [
            "model_index.json", "scheduler/scheduler_config.json",
            "text_encoder/config.json", "text_encoder/model.safetensors",
            "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json",
            "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors.index.json",
            "transformer/diffusion_pytorch_model-00001-of-00002.safetensors", "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
        ], files);
    }

    [Fact]
    public void The_safety_checker_and_its_feature_extractor_are_not_fetched()
    {
        // stable-diffusion-v1-5's model_index.json names both; DiffusersSharp has no safety checker (safety_checker=None).
        var index = new ModelIndex("StableDiffusionPipeline", null, new Dictionary<string, ComponentSpec>
        {
            ["safety_checker"] = new("stable_diffusion", "StableDiffusionSafetyChecker"),
            ["feature_extractor"] = new("transformers", "CLIPImageProcessor"),
            ["scheduler"] = new("diffusers", "PNDMScheduler"),
        });
        string[] repo = ["model_index.json", "safety_checker/config.json", "safety_checker/model.safetensors",
            "feature_extractor/preprocessor_config.json", "scheduler/scheduler_config.json"];
        Assert.Equal(["model_index.json", "scheduler/scheduler_config.json"], HubFileSelector.Select(repo, index, null, "o/r"));
    }

    [Fact]
    public void FLUX_1_Redux_fetches_its_image_encoder_and_feature_extractor()
    {
        // black-forest-labs/FLUX.1-Redux-dev: the prior runs both; the original single file at the root is not fetched.
        var index = new ModelIndex("FluxPriorReduxPipeline", null, new Dictionary<string, ComponentSpec>
        {
            ["feature_extractor"] = new("transformers", "SiglipImageProcessor"),
            ["image_embedder"] = new("flux", "ReduxImageEncoder"),
            ["image_encoder"] = new("transformers", "SiglipVisionModel"),
            ["text_encoder"] = new(null, null),
        });
        string[] repo = ["model_index.json", "flux1-redux-dev.safetensors", "feature_extractor/preprocessor_config.json",
            "image_embedder/config.json", "image_embedder/diffusion_pytorch_model.safetensors", "image_encoder/config.json",
            "image_encoder/model.safetensors"];
        Assert.Equal(["model_index.json", "feature_extractor/preprocessor_config.json", "image_embedder/config.json",
            "image_embedder/diffusion_pytorch_model.safetensors", "image_encoder/config.json", "image_encoder/model.safetensors"],
            HubFileSelector.Select(repo, index, null, "black-forest-labs/FLUX.1-Redux-dev"));
    }

    [Fact]
    public void Components_from_a_single_file_fetch_only_their_configs()
    {
        var files = HubFileSelector.Select(Repo, Index, null, "o/r", new HashSet<string> { "transformer" });
        Assert.Contains("transformer/config.json", files);
        Assert.DoesNotContain(files, f => f.StartsWith("transformer/diffusion_pytorch_model"));
        Assert.Contains("text_encoder/model.safetensors", files);
    }

    [Fact]
    public void Variant_weights_where_present_default_weights_elsewhere()
    {
        var files = HubFileSelector.Select(Repo, Index, "fp16", "o/r");
        Assert.Contains("text_encoder/model.fp16.safetensors", files);
        Assert.DoesNotContain("text_encoder/model.safetensors", files);
        Assert.Contains("transformer/diffusion_pytorch_model.safetensors.index.fp16.json", files);
        Assert.Contains("transformer/diffusion_pytorch_model.fp16-00002-of-00002.safetensors", files);
        Assert.DoesNotContain("transformer/diffusion_pytorch_model.safetensors.index.json", files);
        Assert.DoesNotContain(files, f => f.EndsWith(".bin", StringComparison.Ordinal) || f.Contains("model-00001-of-00002.safetensors"));

        // a variant no component has falls back to the default weights, as diffusers does
        Assert.Equal(HubFileSelector.Select(Repo, Index, null, "o/r"), HubFileSelector.Select(Repo, Index, "bf16", "o/r"));
    }

    [Fact]
    public void Pickle_only_or_variant_only_components_are_refused_with_a_reason()
    {
        string[] pickleOnly = ["model_index.json", "transformer/config.json", "transformer/diffusion_pytorch_model.bin",
            "text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/vocab.json", "scheduler/scheduler_config.json"];
        var e = Assert.Throws<HubException>(() => HubFileSelector.Select(pickleOnly, Index, null, "o/r"));
        Assert.Equal(HubErrorKind.UnsupportedRepo, e.Kind);
        Assert.Contains("'transformer'", e.Message);
        Assert.Contains("safetensors", e.Message);

        string[] fp16Only = ["model_index.json", "transformer/config.json", "transformer/diffusion_pytorch_model.fp16.safetensors",
            "text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/vocab.json", "scheduler/scheduler_config.json"];
        var v = Assert.Throws<HubException>(() => HubFileSelector.Select(fp16Only, Index, null, "o/r"));
        Assert.Contains("--variant fp16", v.Message);
        Assert.Contains("transformer/diffusion_pytorch_model.fp16.safetensors", HubFileSelector.Select(fp16Only, Index, "fp16", "o/r"));
    }

    [Theory]
    [InlineData("model.safetensors", "model", null)]
    [InlineData("model-00001-of-00003.safetensors", "model", null)]
    [InlineData("model.fp16.safetensors", "model", "fp16")]
    [InlineData("model.fp16-00001-of-00003.safetensors", "model", "fp16")]
    [InlineData("diffusion_pytorch_model-00001-of-00002.fp16.safetensors", "diffusion_pytorch_model", "fp16")]
    [InlineData("model.safetensors.index.json", "model", null)]
    [InlineData("model.safetensors.index.fp16.json", "model", "fp16")]
    [InlineData("model.fp16.safetensors.index.json", "model", "fp16")]
    public void Weight_names_parse_to_stem_and_variant(string name, string stem, string? variant) =>
        Assert.Equal((stem, variant), HubFileSelector.ParseSafetensors(name));

    [Theory]
    [InlineData("config.json")]
    [InlineData("model.bin")]
    [InlineData("pytorch_model.bin.index.json")]
    public void Other_names_are_not_safetensors_weights(string name) => Assert.Null(HubFileSelector.ParseSafetensors(name));
}
