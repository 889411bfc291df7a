using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Chroma;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Cli.Commands;

// Chroma's run: generate (ChromaPipeline) and img2img (ChromaImg2ImgPipeline); the options were checked against the
// family before loading (LoadedModel.CheckChroma).
internal sealed partial class GenerationRunner
{
    private Generated GenerateChroma(LoadedModel model, ChromaComponents chroma, string verb, IProgress<PipelineProgress>? progress,
        PreviewSink? preview, CancellationToken ct)
    {
        // img2img: the image and strength; `with` keeps the request's type for the shared fields.
        ChromaRequest request = settings is Img2ImgSettings img2img
            ? new ChromaImg2ImgRequest { Image = ImageFile.LoadRgb(img2img.Image!), Strength = img2img.StrengthValue ?? ChromaImg2ImgRequest.DefaultStrength }
            : new ChromaRequest();
        request = request with
        {
            Prompt = settings.Prompt is null ? null : (PromptList?)settings.Prompt,
            NegativePrompt = settings.NegativePrompt is null ? null : (PromptList?)settings.NegativePrompt,
            Height = settings.Height,
            Width = settings.Width,
            NumInferenceSteps = settings.Steps ?? ChromaRequest.DefaultSteps,
            GuidanceScale = settings.GuidanceScale ?? ChromaRequest.DefaultGuidanceScale,
            NumImagesPerPrompt = settings.NumImages,
            Generator = Track(new Generator(settings.GeneratorDevice).ManualSeed(Seed)),
            MaxSequenceLength = settings.MaxSequenceLength ?? 512,
            OutputType = OutputType.Image,
        };
        if (ReadChromaPromptEmbeds() is { } e)
            request = request with
            {
                PromptEmbeds = e.Embeds, PromptAttentionMask = e.Mask, NegativePromptEmbeds = e.NegativeEmbeds, NegativePromptAttentionMask = e.NegativeMask,
            };
        using ChromaPipelineBase pipe = request is ChromaImg2ImgRequest ? new ChromaImg2ImgPipeline(chroma) : new ChromaPipeline(chroma);
        pipe.OnPromptTruncated = OnTruncated;
        var (height, width) = pipe.OutputSizeOf(request);
        if (preview is not null)
            request = request with { CallbackOnStepEnd = VerbPipelines.Previews(preview, latents => pipe.PreviewImages(latents, height, width)) };
        using var result = request is ChromaImg2ImgRequest imageRequest
            ? ((ChromaImg2ImgPipeline)pipe).Generate(imageRequest, progress, ct)
            : ((ChromaPipeline)pipe).Generate(request, progress, ct);
        return new Generated(result.Images!, Parameters(verb, request.NumInferenceSteps!.Value, model.Name, "FlowMatchEulerDiscrete", request.GuidanceScale,
            (request as ChromaImg2ImgRequest)?.Strength));
    }

    /// <summary>
    /// The tensors of --prompt-embeds for Chroma (owned by the runner): prompt_embeds with prompt_attention_mask, optionally
    /// negative_prompt_embeds with negative_prompt_attention_mask; null without the option.
    /// </summary>
    private (Tensor Embeds, Tensor Mask, Tensor? NegativeEmbeds, Tensor? NegativeMask)? ReadChromaPromptEmbeds()
    {
        if (settings.PromptEmbeds is not { } file) return null;
        using var weights = SafetensorsFile.Open(file);
        Tensor? Get(string key) => weights.Tensors.ContainsKey(key) ? Track(weights.Read(key).clone()) : null;
        Tensor Required(string key) => Get(key) ?? throw new InvalidDataException($"{file} has no '{key}' tensor (Chroma's prompt embeddings come with their attention mask).");
        var embeds = Required("prompt_embeds");
        var mask = Required("prompt_attention_mask");
        var negative = Get("negative_prompt_embeds");
        var negativeMask = negative is null ? null : Required("negative_prompt_attention_mask");
        return (embeds, mask, negative, negativeMask);
    }
}
