using System.Reflection;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Threading.Channels;
using DiffusersSharp.Cli.Commands;
using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Pipelines.Flux2;
using DiffusersSharp.Pipelines.Sana;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Schedulers;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace DiffusersSharp.Cli.Web;

/// <summary>
/// The web UI of <c>diffusers serve</c>: one page (<c>GET /</c>), the model's description (<c>GET /api/info</c>) and
/// generation (<c>POST /api/generate</c>, answered as server-sent events: progress, step previews, then the images).
/// One generation runs at a time; later requests wait their turn. A client that goes away cancels its generation.
/// </summary>
internal sealed class WebServer : IAsyncDisposable
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        // Data URLs hold many "+": the default encoder would write each as \u002B. The stream is read by JSON.parse, not embedded in HTML.
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>
    /// The page sends the picture as a PNG data URL at its own size, and a photo's PNG in base64 is tens of MB: over Kestrel's
    /// default limit of 30 MB, which refused it with an empty 413.
    /// </summary>
    private const long MaxRequestBytes = 256L << 20;

    private readonly WebApplication _app;
    private readonly LoadedModel _model;
    private readonly CliOutput _output;
    private readonly SemaphoreSlim _gate = new(1, 1);

    private WebServer(WebApplication app, LoadedModel model, CliOutput output)
    {
        _app = app;
        _model = model;
        _output = output;
        app.MapGet("/", () => Results.Content(IndexHtml.Value, "text/html; charset=utf-8"));
        app.MapGet("/api/info", () => Results.Json(Info(), Json));
        app.MapPost("/api/generate", GenerateAsync);
    }

    /// <summary>Where the server listens (with the port chosen when 0 was asked for).</summary>
    public Uri Address { get; private set; } = new("http://127.0.0.1/");

    /// <summary>Starts listening on <paramref name="host"/>:<paramref name="port"/> (0: any free port) with <paramref name="model"/> loaded.</summary>
    public static async Task<WebServer> StartAsync(LoadedModel model, CliOutput output, string host, int port, CancellationToken ct)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls($"http://{host}:{port}");
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.Limits.MaxRequestBodySize = MaxRequestBytes);
        var server = new WebServer(builder.Build(), model, output);
        await server._app.StartAsync(ct);
        var addresses = server._app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>();
        server.Address = new Uri(addresses!.Addresses.First());
        return server;
    }

    /// <summary>Runs until <paramref name="ct"/> is cancelled or the process is asked to stop (Ctrl+C).</summary>
    public Task WaitForShutdownAsync(CancellationToken ct) => _app.WaitForShutdownAsync(ct);

    private object Info()
    {
        var unet = _model.UNet;
        return new
        {
            Model = _model.Name,
            Pipeline = _model.PipelineClass,
            Family = _model.Flux is not null ? "flux" : _model.PixArt is not null ? "pixart" : _model.Chroma is not null ? "chroma"
                : _model.ZImage is not null ? "zimage" : _model.QwenImage is not null ? "qwenimage" : _model.Flux2Klein is not null ? "flux2klein" : _model.Sana is not null ? "sana"
                : _model.Lumina2 is not null ? "lumina2" : _model.AuraFlow is not null ? "auraflow" : _model.CogView4 is not null ? "cogview4" : unet is null ? "sd3" : unet.IsXL ? "sdxl" : "sd",
            Scheduler = _model.Swappable?.SchedulerClassName ?? _model.Sana?.SchedulerConfig["_class_name"]?.GetValue<string>() ?? "FlowMatchEulerDiscreteScheduler",
            Schedulers = _model.Swappable is null ? [] : DiffusionSchedulers.KnownNames,
            Modes = _model.Modes,
            // The page hides the strength field where it does not apply (Kontext's img2img is an edit of the whole image):
            // strength says whether img2img takes one, strength_modes lists the modes that do.
            Strength = _model.HasStrength,
            StrengthModes = _model.StrengthModes,
            // Flux's true CFG, which diffusers' FluxFillPipeline lacks.
            TrueCfg = _model.Flux is not null && _model.PipelineClass is not FluxComponents.FillPipelineClass and not FluxComponents.ControlPipelineClass,
            // Whether requests take a negative prompt: not the models whose diffusers pipelines have no guidance pass for
            // one (FLUX.1-Fill and control models: no true CFG; latent consistency models: no CFG; FLUX.2 [klein]: always "").
            NegativePrompt = _model.PipelineClass is not (FluxComponents.FillPipelineClass or FluxComponents.ControlPipelineClass
                or LatentConsistencyModelPipeline.PipelineClass or LatentConsistencyModelImg2ImgPipeline.PipelineClass
                or Flux2KleinComponents.Flux2KleinPipelineClass or Flux2KleinComponents.Flux2KleinKVPipelineClass
                or SanaComponents.SanaSprintPipelineClass),
            // Inpainting only the masked area (padding_mask_crop), which diffusers' FluxFillPipeline lacks.
            PaddingMaskCrop = _model.PipelineClass != FluxComponents.FillPipelineClass,
            // Whether requests take freeu: UNet models, not the latent upscaler (its K-diffusion blocks have none).
            Freeu = _model.UNet is not null && !LoadedModel.IsLatentUpscaler(_model.PipelineClass),
            // Whether requests take pag_scale / pag_layers / pag_adaptive_scale (diffusers' PAG pipelines): SD 1.x / 2.x and SDXL
            // models in every mode, SD3 in txt2img and img2img (pag_modes lists them), not the upscalers, InstructPix2Pix or
            // latent consistency models; and the layers PAG perturbs without pag_layers (the PAG pipeline's default).
            Pag = _model.PagModes.Count > 0,
            PagModes = _model.PagModes,
            PagDefaultLayers = _model.Sd3 is not null ? new StableDiffusion3PAGRequest().PagAppliedLayers : new StableDiffusionPAGRequest().PagAppliedLayers,
            // The server's --lora files (names) and the scales they are fused at now; requests may change them with
            // lora_scale. "lora" / "lora_scale" name the first, for clients of one LoRA.
            Lora = _model.Loras.Count > 0 ? Path.GetFileName(_model.Loras[0].File) : null,
            LoraScale = _model.Loras.Count > 0 ? _model.Loras[0].Scale : 0,
            Loras = _model.Loras.Select(l => Path.GetFileName(l.File)).ToArray(),
            LoraScales = _model.Loras.Select(l => l.Scale).ToArray(),
            // "controlnets", "controlnet_modes": spelled as the request's controlnet_scale.
            Controlnets = _model.ControlNets,
            ControlnetModes = _model.ControlNetModes,
            GuessMode = _model.HasGuessMode,
            // Per ControlNet: its number of control types if it is a ControlNet-Union (the request then takes control_mode), else null.
            ControlnetUnionTypes = _model.ControlNetUnionTypes,
            ControlModeNames = ControlNetUnionMode.Names,
            // The T2I-Adapters (serve --adapter): txt2img takes an adapter image per adapter; SDXL's also an adapter_factor.
            Adapters = _model.Adapters,
            AdapterModes = _model.AdapterModes,
            AdapterFactor = _model.Adapters.Count > 0 && unet is { IsXL: true },
            // The server's IP-Adapter (serve --ip-adapter, its file name): requests take ip_adapter_image and ip_adapter_scale.
            IpAdapter = _model.IpAdapter is { } ipAdapter ? ipAdapter.Split('/', '\\').Last() : null,
            // An InstructPix2Pix model: img2img takes image_guidance.
            ImageGuidance = LoadedModel.IsInstructPix2Pix(_model.PipelineClass),
            // An x4 upscaler: img2img (four times the image) takes noise_level.
            NoiseLevel = LoadedModel.IsUpscaler(_model.PipelineClass),
            // The upscalers' img2img makes the image this many times larger (x4 upscaler 4, latent upscaler 2), else null.
            UpscaleFactor = LoadedModel.IsUpscaler(_model.PipelineClass) ? 4 : LoadedModel.IsLatentUpscaler(_model.PipelineClass) ? 2 : (int?)null,
            // serve --redux: requests take redux_image / redux_images and redux_scale / redux_pooled_scale (FLUX.1 models).
            Redux = _model.ReduxPrior is not null,
            // A FLUX.1 control model (FLUX.1-Canny-dev, Depth-dev): every request takes its control_image.
            TakesControlImage = _model.PipelineClass == FluxComponents.ControlPipelineClass,
        };
    }

    /// <summary>
    /// A mode the model does not run, refused in the API's words (the model check that follows speaks of the CLI verbs and
    /// their options, which the page does not have).
    /// </summary>
    private void CheckMode(WebGenerateRequest body)
    {
        if (!_model.Modes.Contains(body.Mode) && body.Mode is "txt2img" or "img2img" or "inpaint")
            throw new ArgumentException(_model.PipelineClass switch
            {
                FluxComponents.FillPipelineClass => $"mode {body.Mode} does not apply to FLUX.1-Fill ({_model.PipelineClass}), which repaints the masked part of an image: use mode inpaint with image and mask.",
                _ => $"mode {body.Mode} does not apply to {_model.PipelineClass}: use one of {string.Join(", ", _model.Modes)}.",
            });
        if (((body.PagScale ?? body.PagAdaptiveScale) is not null || body.PagLayers is not null) && !_model.PagModes.Contains(body.Mode)
            && _model.Modes.Contains(body.Mode))
            throw new ArgumentException(_model.PagModes.Count == 0
                ? $"pag_scale, pag_layers and pag_adaptive_scale do not apply to {_model.PipelineClass} (diffusers has no PAG pipeline for it)."
                : $"pag_scale, pag_layers and pag_adaptive_scale apply to {string.Join(", ", _model.PagModes)} with {_model.PipelineClass}{(_model.Sd3 is not null && body.Mode == "inpaint" ? " (diffusers has no SD3 PAG inpainting pipeline)" : "")}.");
        if (body.Mode != "txt2img" && !_model.ControlNetModes.Contains(body.Mode) && (body.ControlImage ?? body.ControlImages?.FirstOrDefault()) is not null && _model.ControlNets.Count > 0)
            throw new ArgumentException($"the ControlNets of {_model.PipelineClass} models steer text to image only (diffusers' SD3 ControlNet image-to-image and inpainting pipelines are not implemented yet): send mode txt2img with the control image.");
    }

    private async Task GenerateAsync(HttpContext http)
    {
        var aborted = http.RequestAborted;
        string uploads = Directory.CreateTempSubdirectory("diffusers-web-").FullName;
        try
        {
            GenerateSettings settings;
            VerbPipelines pipelines;
            double[]? loraScaleWanted;
            try
            {
                var body = await http.Request.ReadFromJsonAsync<WebGenerateRequest>(Json, aborted)
                    ?? throw new ArgumentException("The request body must be a JSON object.");
                CheckMode(body);
                if (body.LoraScale is { } loraScales) _model.CheckLoraScales(loraScales);
                settings = body.ToSettings(_model.Name, new ServerModels(_model.ControlNets, _model.ControlNetUnionTypes, _model.Adapters,
                    _model.PipelineClass == FluxComponents.ControlPipelineClass, _model.IpAdapter, _model.IpAdapterImageEncoder, _model.ReduxName), uploads,
                    _model.Loras);
                loraScaleWanted = body.LoraScale;
                pipelines = VerbPipelines.For(settings);
                _model.CheckOptions(settings);
            }
            catch (Exception e) when (e is JsonException || ExitCodes.IsInvalidInput(e))
            {
                http.Response.StatusCode = StatusCodes.Status400BadRequest;
                string reason = e is JsonException json ? WebText.JsonError(json) : WebText.WithoutDashes(ExitCodes.OneLine(e));
                await http.Response.WriteAsJsonAsync(new { Error = reason }, Json, aborted);
                return;
            }
            await _gate.WaitAsync(aborted);
            try
            {
                // One generation at a time: the LoRA is re-fused at a new scale only between them.
                if (loraScaleWanted is { } scales) _model.SetLoraScales(scales);
                await StreamGenerationAsync(http, settings, pipelines, aborted);
            }
            finally
            {
                _gate.Release();
            }
        }
        finally
        {
            Directory.Delete(uploads, recursive: true);
        }
    }

    /// <summary>Runs the generation on a worker thread and relays its events to the client as they come.</summary>
    private async Task StreamGenerationAsync(HttpContext http, GenerateSettings settings, VerbPipelines pipelines, CancellationToken aborted)
    {
        http.Response.ContentType = "text/event-stream";
        http.Response.Headers.CacheControl = "no-cache";
        var events = Channel.CreateUnbounded<(string Name, object Data)>();
        void Emit(string name, object data) => events.Writer.TryWrite((name, data));
        var work = Task.Run(() =>
        {
            using var runner = new GenerationRunner(_output, settings);
            try
            {
                var preview = settings.PreviewEvery is { } every
                    ? new PreviewSink(every, (step, images) => Emit("preview", new { Step = step, Images = images.Select(DataUrl) }))
                    : null;
                var progress = new EventProgress(p => Emit("progress", new { p.Stage, p.Step, Total = p.TotalSteps }));
                var generated = runner.Generate(_model, pipelines, progress, preview, aborted);
                Emit("result", new { runner.Seed, generated.Parameters, Images = generated.Images.Select(i => DataUrl(i, generated.Parameters)) });
            }
            catch (OperationCanceledException) when (aborted.IsCancellationRequested)
            {
                // The client left: nobody to tell.
            }
            catch (Exception e)
            {
                Emit("error", new { Error = WebText.WithoutDashes(ExitCodes.OneLine(e)), Invalid = ExitCodes.IsInvalidInput(e) });
            }
            finally
            {
                events.Writer.Complete();
            }
        }, CancellationToken.None);
        try
        {
            await foreach (var (name, data) in events.Reader.ReadAllAsync(aborted))
            {
                string line = $"event: {name}\ndata: {JsonSerializer.Serialize(data, Json)}\n\n";
                await http.Response.Body.WriteAsync(Encoding.UTF8.GetBytes(line), aborted);
                await http.Response.Body.FlushAsync(aborted);
            }
        }
        catch (OperationCanceledException) when (aborted.IsCancellationRequested)
        {
            // The client left; the generation sees the same token and stops after its current step.
        }
        await work;
    }

    private static string DataUrl(ImageBuffer image) => DataUrl(image, null);

    private static string DataUrl(ImageBuffer image, string? parameters) =>
        "data:image/png;base64," + Convert.ToBase64String(ImageFile.EncodePng(image,
            parameters is null ? null : new Dictionary<string, string> { [PngText.ParametersKeyword] = parameters }));

    private static readonly Lazy<string> IndexHtml = new(() =>
    {
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream("DiffusersSharp.Cli.Web.index.html")
            ?? throw new InvalidOperationException("The web UI page is missing from the assembly.");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    });

    /// <summary>Progress reported on the generating thread, at once (<see cref="Progress{T}"/> would post it elsewhere).</summary>
    private sealed class EventProgress(Action<PipelineProgress> report) : IProgress<PipelineProgress>
    {
        public void Report(PipelineProgress value) => report(value);
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await _app.DisposeAsync();
        _gate.Dispose();
    }
}
