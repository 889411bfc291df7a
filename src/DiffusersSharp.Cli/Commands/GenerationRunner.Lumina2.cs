using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Lumina2;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Cli.Commands;

// Lumina-Image 2.0's run: generate (Lumina2Pipeline); the options were checked against the family before loading (LoadedModel.CheckTextOnlyFlow).
internal sealed partial class GenerationRunner
{
    private Generated GenerateLumina2(LoadedModel model, Lumina2Components lumina2, string verb, IProgress<PipelineProgress>? progress,
        PreviewSink? preview, CancellationToken ct)
    {
        var defaults = new Lumina2Request();
        var request = defaults with
        {
            Prompt = settings.Prompt is null ? null : (PromptList?)settings.Prompt,
            NegativePrompt = settings.NegativePrompt is null ? null : (PromptList?)settings.NegativePrompt,
            // Without --width / --height: the transformer's trained size (sample_size x 8: 1024 for Lumina-Image-2.0).
            Height = settings.Height,
            Width = settings.Width,
            NumInferenceSteps = settings.Steps ?? defaults.NumInferenceSteps,
            GuidanceScale = settings.GuidanceScale ?? defaults.GuidanceScale,
            CfgTruncRatio = settings.CfgTruncationValue ?? defaults.CfgTruncRatio,
            CfgNormalization = settings.CfgNormalizationValue is { } n ? n == 1 : defaults.CfgNormalization,
            NumImagesPerPrompt = settings.NumImages,
            Generator = Track(new Generator(settings.GeneratorDevice).ManualSeed(Seed)),
            MaxSequenceLength = settings.MaxSequenceLength ?? defaults.MaxSequenceLength,
            OutputType = OutputType.Image,
        };
        using var pipe = new Lumina2Pipeline(lumina2);
        pipe.OnPromptTruncated = OnTruncated;
        if (preview is not null)
            request = request with { CallbackOnStepEnd = VerbPipelines.Previews(preview, pipe.PreviewImages) };
        using var result = pipe.Generate(request, progress, ct);
        return new Generated(result.Images!, Parameters(verb, request.NumInferenceSteps, model.Name, "FlowMatchEulerDiscrete", request.GuidanceScale, null));
    }
}
