using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.ZImage;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Cli.Commands;

// Z-Image's run: generate (ZImagePipeline) and img2img (ZImageImg2ImgPipeline); the options were checked against the
// family before loading (LoadedModel.CheckZImage).
internal sealed partial class GenerationRunner
{
    private Generated GenerateZImage(LoadedModel model, ZImageComponents zImage, string verb, IProgress<PipelineProgress>? progress,
        PreviewSink? preview, CancellationToken ct)
    {
        // img2img: the image and strength; `with` keeps the request's type for the shared fields.
        ZImageRequest request = settings is Img2ImgSettings img2img
            ? new ZImageImg2ImgRequest { Image = ImageFile.LoadRgb(img2img.Image!), Strength = img2img.StrengthValue ?? ZImageImg2ImgRequest.DefaultStrength }
            : new ZImageRequest();
        request = request with
        {
            Prompt = settings.Prompt is null ? null : (PromptList?)settings.Prompt,
            NegativePrompt = settings.NegativePrompt is null ? null : (PromptList?)settings.NegativePrompt,
            Height = settings.Height,
            Width = settings.Width,
            NumInferenceSteps = settings.Steps ?? ZImagePipelineBase.DefaultSteps,
            GuidanceScale = settings.GuidanceScale ?? request.GuidanceScale,
            CfgNormalization = settings.CfgNormalizationValue ?? request.CfgNormalization,
            CfgTruncation = settings.CfgTruncationValue ?? request.CfgTruncation,
            NumImagesPerPrompt = settings.NumImages,
            Generator = Track(new Generator(settings.GeneratorDevice).ManualSeed(Seed)),
            MaxSequenceLength = settings.MaxSequenceLength ?? Qwen3PromptEncoder.DefaultMaxSequenceLength,
            OutputType = OutputType.Image,
        };
        if (ReadZImagePromptEmbeds() is { } e) request = request with { PromptEmbeds = e.Embeds, NegativePromptEmbeds = e.NegativeEmbeds };
        using ZImagePipelineBase pipe = request is ZImageImg2ImgRequest ? new ZImageImg2ImgPipeline(zImage) : new ZImagePipeline(zImage);
        pipe.OnPromptTruncated = OnTruncated;
        if (preview is not null)
            request = request with { CallbackOnStepEnd = VerbPipelines.Previews(preview, pipe.PreviewImages) };
        using var result = request is ZImageImg2ImgRequest imageRequest
            ? ((ZImageImg2ImgPipeline)pipe).Generate(imageRequest, progress, ct)
            : ((ZImagePipeline)pipe).Generate(request, progress, ct);
        return new Generated(result.Images!, Parameters(verb, request.NumInferenceSteps!.Value, model.Name, "FlowMatchEulerDiscrete", request.GuidanceScale,
            (request as ZImageImg2ImgRequest)?.Strength));
    }

    /// <summary>
    /// The tensors of --prompt-embeds for Z-Image (owned by the runner): prompt_embeds, one [L, D] prompt or [N, L, D] for
    /// N prompts of one length, or prompt_embeds.0, prompt_embeds.1, ... for prompts of their own lengths; the same for the
    /// optional negative_prompt_embeds. Null without the option.
    /// </summary>
    private (IReadOnlyList<Tensor> Embeds, IReadOnlyList<Tensor>? NegativeEmbeds)? ReadZImagePromptEmbeds()
    {
        if (settings.PromptEmbeds is not { } file) return null;
        using var weights = SafetensorsFile.Open(file);
        IReadOnlyList<Tensor>? List(string name)
        {
            if (weights.Tensors.ContainsKey(name))
            {
                if (weights.Tensors.ContainsKey(name + ".0"))
                    throw new InvalidDataException($"{file} has both '{name}' and '{name}.0': give one tensor or a numbered list.");
                var all = Track(weights.Read(name).clone());
                return all.dim() == 3 ? all.unbind(0).Select(Track).ToArray() : [all];
            }
            var list = new List<Tensor>();
            while (weights.Tensors.ContainsKey($"{name}.{list.Count}")) list.Add(Track(weights.Read($"{name}.{list.Count}").clone()));
            return list.Count > 0 ? list : null;
        }
        var embeds = List("prompt_embeds")
            ?? throw new InvalidDataException($"{file} has no 'prompt_embeds' tensor (Z-Image: [L, D] or [N, L, D], or prompt_embeds.0, prompt_embeds.1, ...).");
        return (embeds, List("negative_prompt_embeds"));
    }
}
