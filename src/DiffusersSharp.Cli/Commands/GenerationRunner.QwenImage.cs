using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.QwenImage;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Cli.Commands;

// Qwen-Image's run: generate (QwenImagePipeline), img2img (QwenImageImg2ImgPipeline) and inpaint (QwenImageInpaintPipeline);
// the options were checked against the family before loading (LoadedModel.CheckQwenImage). --guidance is diffusers'
// true_cfg_scale.
internal sealed partial class GenerationRunner
{
    private Generated GenerateQwenImage(LoadedModel model, QwenImageComponents qwenImage, string verb, IProgress<PipelineProgress>? progress,
        PreviewSink? preview, CancellationToken ct)
    {
        // img2img: the image and strength; inpaint: the mask too; `with` keeps the request's type for the shared fields.
        QwenImageRequest request = settings switch
        {
            InpaintSettings inpaint => new QwenImageInpaintRequest
            {
                Image = ImageFile.LoadRgb(inpaint.Image!), MaskImage = ImageFile.Load(inpaint.Mask!),
                Strength = inpaint.StrengthValue ?? QwenImageImg2ImgRequest.DefaultStrength, PaddingMaskCrop = inpaint.PaddingMaskCrop,
            },
            Img2ImgSettings img2img => new QwenImageImg2ImgRequest { Image = ImageFile.LoadRgb(img2img.Image!), Strength = img2img.StrengthValue ?? QwenImageImg2ImgRequest.DefaultStrength },
            _ => new QwenImageRequest(),
        };
        request = request with
        {
            Prompt = settings.Prompt is null ? null : (PromptList?)settings.Prompt,
            NegativePrompt = settings.NegativePrompt is null ? null : (PromptList?)settings.NegativePrompt,
            Height = settings.Height,
            Width = settings.Width,
            NumInferenceSteps = settings.Steps ?? QwenImagePipelineBase.DefaultSteps,
            TrueCfgScale = settings.GuidanceScale ?? QwenImageRequest.DefaultTrueCfgScale,
            NumImagesPerPrompt = settings.NumImages,
            Generator = Track(new Generator(settings.GeneratorDevice).ManualSeed(Seed)),
            MaxSequenceLength = settings.MaxSequenceLength ?? request.MaxSequenceLength,
            OutputType = OutputType.Image,
        };
        if (ReadQwenImagePromptEmbeds() is { } e)
            request = request with { PromptEmbeds = e.Embeds, PromptEmbedsMask = e.Mask, NegativePromptEmbeds = e.NegativeEmbeds, NegativePromptEmbedsMask = e.NegativeMask };
        using QwenImagePipelineBase pipe = request switch
        {
            QwenImageInpaintRequest => new QwenImageInpaintPipeline(qwenImage),
            QwenImageImg2ImgRequest => new QwenImageImg2ImgPipeline(qwenImage),
            _ => new QwenImagePipeline(qwenImage),
        };
        int height = request.Height ?? QwenImagePipelineBase.DefaultSize, width = request.Width ?? QwenImagePipelineBase.DefaultSize;
        if (preview is not null)
            request = request with { CallbackOnStepEnd = VerbPipelines.Previews(preview, latents => pipe.PreviewImages(latents, height, width)) };
        using var result = request switch
        {
            QwenImageInpaintRequest inpaintRequest => ((QwenImageInpaintPipeline)pipe).Generate(inpaintRequest, progress, ct),
            QwenImageImg2ImgRequest imageRequest => ((QwenImageImg2ImgPipeline)pipe).Generate(imageRequest, progress, ct),
            _ => ((QwenImagePipeline)pipe).Generate(request, progress, ct),
        };
        return new Generated(result.Images!, Parameters(verb, request.NumInferenceSteps!.Value, model.Name, "FlowMatchEulerDiscrete", request.TrueCfgScale,
            (request as QwenImageImg2ImgRequest)?.Strength));
    }

    /// <summary>
    /// The tensors of --prompt-embeds for Qwen-Image (owned by the runner): prompt_embeds [L, D] (one prompt) or [N, L, D]
    /// with the optional prompt_embeds_mask [L] / [N, L] (1 = a real token; without it every token counts, as in diffusers),
    /// and likewise negative_prompt_embeds / negative_prompt_embeds_mask. Null without the option.
    /// </summary>
    private (Tensor Embeds, Tensor? Mask, Tensor? NegativeEmbeds, Tensor? NegativeMask)? ReadQwenImagePromptEmbeds()
    {
        if (settings.PromptEmbeds is not { } file) return null;
        using var weights = SafetensorsFile.Open(file);
        Tensor? Read(string name, int batchedRank)
        {
            if (!weights.Tensors.ContainsKey(name)) return null;
            var t = Track(weights.Read(name).clone());
            return t.dim() == batchedRank - 1 ? Track(t.unsqueeze(0)) : t;
        }
        var embeds = Read("prompt_embeds", 3)
            ?? throw new InvalidDataException($"{file} has no 'prompt_embeds' tensor (Qwen-Image: [L, D] or [N, L, D], with an optional prompt_embeds_mask).");
        return (embeds, Read("prompt_embeds_mask", 2), Read("negative_prompt_embeds", 3), Read("negative_prompt_embeds_mask", 2));
    }
}
