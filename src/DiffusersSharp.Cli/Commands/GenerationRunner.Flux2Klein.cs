using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux2;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Cli.Commands;

// FLUX.2 [klein]'s run: generate from text and img2img as reference editing (Flux2KleinPipeline: the image conditions every
// step; no strength), inpaint (Flux2KleinInpaintPipeline); the options were checked against the family before loading
// (LoadedModel.CheckFlux2Klein).
// --guidance is diffusers' guidance_scale, ignored by the step-distilled models.
internal sealed partial class GenerationRunner
{
    private Generated GenerateFlux2Klein(LoadedModel model, Flux2KleinComponents klein, string verb, IProgress<PipelineProgress>? progress,
        PreviewSink? preview, CancellationToken ct)
    {
        // inpaint: Flux2KleinInpaintPipeline (its own defaults: guidance 8, strength 0.8); `with` keeps the request's type.
        Flux2KleinRequest request = settings is InpaintSettings inpaint
            ? new Flux2KleinInpaintRequest
            {
                Image = ImageFile.LoadRgb(inpaint.Image!), MaskImage = ImageFile.Load(inpaint.Mask!),
                Strength = inpaint.StrengthValue ?? Flux2KleinInpaintRequest.DefaultStrength, PaddingMaskCrop = inpaint.PaddingMaskCrop,
                ImageReference = settings.ReferenceImages.Count > 0 ? ImageFile.LoadRgb(settings.ReferenceImages[0]) : null,
            }
            : new Flux2KleinRequest { Images = ReferenceImages() };
        request = request with
        {
            Prompt = settings.Prompt is null ? null : (PromptList?)settings.Prompt,
            Height = request is Flux2KleinInpaintRequest ? null : settings.Height,
            Width = request is Flux2KleinInpaintRequest ? null : settings.Width,
            NumInferenceSteps = settings.Steps ?? Flux2KleinPipelineBase.DefaultSteps,
            GuidanceScale = settings.GuidanceScale ?? request.GuidanceScale,
            NumImagesPerPrompt = settings.NumImages,
            Generator = Track(new Generator(settings.GeneratorDevice).ManualSeed(Seed)),
            MaxSequenceLength = settings.MaxSequenceLength ?? 512,
            OutputType = OutputType.Image,
        };
        if (ReadFlux2PromptEmbeds() is { } e) request = request with { PromptEmbeds = e.Embeds, NegativePromptEmbeds = e.NegativeEmbeds };
        // A Flux2KleinKVPipeline folder runs diffusers' KV-cache pipeline (no CFG, no inpainting: refused before loading).
        using Flux2KleinPipelineBase pipe = request is Flux2KleinInpaintRequest ? new Flux2KleinInpaintPipeline(klein)
            : model.PipelineClass == Flux2KleinComponents.Flux2KleinKVPipelineClass ? new Flux2KleinKVPipeline(klein) : new Flux2KleinPipeline(klein);
        if (preview is not null)
        {
            // The output size is known before the run: the request's, else the (reference) image's encoded size.
            var (height, width) = pipe switch
            {
                Flux2KleinInpaintPipeline inpainting => inpainting.OutputSize(((Flux2KleinInpaintRequest)request).Image!),
                Flux2KleinKVPipeline kv => kv.OutputSize(request),
                _ => ((Flux2KleinPipeline)pipe).OutputSize(request),
            };
            request = request with { CallbackOnStepEnd = VerbPipelines.Previews(preview, latents => pipe.PreviewImages(latents, height, width)) };
        }
        using var result = pipe switch
        {
            Flux2KleinInpaintPipeline inpainting => inpainting.Generate((Flux2KleinInpaintRequest)request, progress, ct),
            Flux2KleinKVPipeline kv => kv.Generate(request, progress, ct),
            _ => ((Flux2KleinPipeline)pipe).Generate(request, progress, ct),
        };
        return new Generated(result.Images!, Parameters(verb, request.NumInferenceSteps!.Value, model.Name, "FlowMatchEulerDiscrete",
            pipe.DoesCfg(request) ? request.GuidanceScale : 1.0, (request as Flux2KleinInpaintRequest)?.Strength));
    }

    /// <summary>img2img's --image, then every --reference-image, as Flux2KleinPipeline's reference images (null without any).</summary>
    private IReadOnlyList<ImageBuffer>? ReferenceImages()
    {
        var files = (settings is Img2ImgSettings img2img ? [img2img.Image!] : Array.Empty<string>()).Concat(settings.ReferenceImages).ToList();
        return files.Count == 0 ? null : files.Select(ImageFile.LoadRgb).ToArray();
    }

    /// <summary>
    /// The tensors of --prompt-embeds for FLUX.2 [klein] (owned by the runner): prompt_embeds [L, D] (one prompt) or
    /// [N, L, D], and the optional negative_prompt_embeds likewise (the base models' CFG; without it the empty prompt is
    /// encoded). Null without the option.
    /// </summary>
    private (Tensor Embeds, Tensor? NegativeEmbeds)? ReadFlux2PromptEmbeds()
    {
        if (settings.PromptEmbeds is not { } file) return null;
        using var weights = SafetensorsFile.Open(file);
        Tensor? Read(string name)
        {
            if (!weights.Tensors.ContainsKey(name)) return null;
            var t = Track(weights.Read(name).clone());
            return t.dim() == 2 ? Track(t.unsqueeze(0)) : t;
        }
        var embeds = Read("prompt_embeds")
            ?? throw new InvalidDataException($"{file} has no 'prompt_embeds' tensor (FLUX.2 [klein]: [L, D] or [N, L, D]).");
        return (embeds, Read("negative_prompt_embeds"));
    }
}
