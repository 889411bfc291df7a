using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Sana;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Cli.Commands;

// Sana's run: generate (SanaPipeline, or SanaSprintPipeline for SANA-Sprint folders) and img2img (SanaSprintImg2ImgPipeline); the options were checked against the family before loading (LoadedModel.CheckSana).
internal sealed partial class GenerationRunner
{
    private Generated GenerateSana(LoadedModel model, SanaComponents sana, string verb, IProgress<PipelineProgress>? progress,
        PreviewSink? preview, CancellationToken ct)
    {
        bool sprint = model.PipelineClass == SanaComponents.SanaSprintPipelineClass;
        // img2img (SANA-Sprint only; checked before loading): the image and strength; `with` keeps the request's type.
        SanaRequest defaults = settings is Img2ImgSettings img2img
            ? new SanaSprintImg2ImgRequest { Image = ImageFile.LoadRgb(img2img.Image!), Strength = img2img.StrengthValue ?? SanaSprintImg2ImgRequest.DefaultStrength }
            : sprint ? new SanaSprintRequest() : new SanaRequest();
        var request = defaults with
        {
            Prompt = settings.Prompt is null ? null : (PromptList?)settings.Prompt,
            NegativePrompt = settings.NegativePrompt is null ? null : (PromptList?)settings.NegativePrompt,
            // Without --width / --height: the transformer's trained size (sample_size x 32: 1024 for Sana_1600M_1024px).
            Height = settings.Height ?? sana.Transformer.Config.SampleSize * sana.VaeScaleFactor,
            Width = settings.Width ?? sana.Transformer.Config.SampleSize * sana.VaeScaleFactor,
            NumInferenceSteps = settings.Steps ?? defaults.NumInferenceSteps,
            GuidanceScale = settings.GuidanceScale ?? defaults.GuidanceScale,
            NumImagesPerPrompt = settings.NumImages,
            Generator = Track(new Generator(settings.GeneratorDevice).ManualSeed(Seed)),
            MaxSequenceLength = settings.MaxSequenceLength ?? defaults.MaxSequenceLength,
            UseResolutionBinning = !settings.NoResolutionBinning,
            OutputType = OutputType.Image,
        };
        using SanaPipelineBase pipe = defaults is SanaSprintImg2ImgRequest ? new SanaSprintImg2ImgPipeline(sana)
            : sprint ? new SanaSprintPipeline(sana) : new SanaPipeline(sana);
        pipe.OnPromptTruncated = OnTruncated;
        if (preview is not null)
            request = request with { CallbackOnStepEnd = VerbPipelines.Previews(preview, latents => pipe.PreviewImages(latents, request)) };
        // SANA-Sprint's intermediate angle applies to its default 2 steps only (diffusers raises otherwise): other counts run without.
        if (request is SanaSprintRequest { NumInferenceSteps: not 2 } sprintRequest) request = sprintRequest with { IntermediateTimesteps = null };
        using var result = pipe switch
        {
            SanaSprintImg2ImgPipeline img2imgPipe => img2imgPipe.Generate((SanaSprintImg2ImgRequest)request, progress, ct),
            SanaSprintPipeline sprintPipe => sprintPipe.Generate((SanaSprintRequest)request, progress, ct),
            _ => ((SanaPipeline)pipe).Generate(request, progress, ct),
        };
        return new Generated(result.Images!, Parameters(verb, request.NumInferenceSteps, model.Name,
            sana.SchedulerConfig["_class_name"]?.GetValue<string>()?.Replace("Scheduler", "") ?? "", request.GuidanceScale,
            (request as SanaSprintImg2ImgRequest)?.Strength));
    }
}
