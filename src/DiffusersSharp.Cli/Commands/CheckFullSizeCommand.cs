using System.ComponentModel;
using System.Text.Json;
using System.Text.Json.Nodes;
using DiffusersSharp.Diagnostics;
using DiffusersSharp.Runtime;
using Spectre.Console;
using Spectre.Console.Cli;
using static TorchSharp.torch;

namespace DiffusersSharp.Cli.Commands;

/// <summary>
/// <c>diffusers check-full-size [--device cuda] [--component transformer|vae|all] [--fixture PATH]</c>: replays the
/// full-size fixture's seeded weights and inputs on a CUDA device, runs the SD3.5-Medium transformer and the SD3 VAE in
/// bfloat16 and prints JSON with the relative L2 / max errors against diffusers' outputs and the timings. Exit code 0
/// when every check passes, 1 when one fails (or CUDA is unavailable), 2 for invalid options.
/// </summary>
public sealed class CheckFullSizeCommand(CliOutput output) : Command<CheckFullSizeCommand.Settings>
{
    /// <summary>The fixture folder inside the repository.</summary>
    public const string RepositoryFixture = "tests/DiffusersSharp.Tests/Fixtures/full-size";

    /// <summary>Options of <c>check-full-size</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        /// <summary>The CUDA device.</summary>
        [CommandOption("--device <DEVICE>")]
        [Description("cuda or cuda:N (the fixture's weights come from CUDA's default generator, so only CUDA replays them). Default cuda.")]
        [DefaultValue("cuda")]
        public string Device { get; init; } = "cuda";

        /// <summary>transformer, vae or all.</summary>
        [CommandOption("--component <NAME>")]
        [Description("transformer, vae or all. Default all.")]
        [DefaultValue("all")]
        public string Component { get; init; } = "all";

        /// <summary>The fixture folder (meta.json + expected.safetensors).</summary>
        [CommandOption("--fixture <PATH>")]
        [Description("Folder with meta.json and expected.safetensors. Default: " + RepositoryFixture + " found from the current folder or the program's folder upwards.")]
        public string? Fixture { get; init; }

        /// <summary>Timed runs after the checked one.</summary>
        [CommandOption("--runs <N>")]
        [Description("Timed runs per component after the checked (warm-up) one; 0 skips timing. Default 10.")]
        [DefaultValue(10)]
        public int Runs { get; init; } = 10;

        /// <summary>The largest relative L2 error that passes.</summary>
        [CommandOption("--max-relative-l2 <X>")]
        [Description("Largest relative L2 error ||ours - diffusers|| / ||diffusers|| that passes (bf16 kernels round differently). Default 0.02.")]
        [DefaultValue(0.02)]
        public double MaxRelativeL2 { get; init; } = 0.02;

        /// <inheritdoc />
        public override ValidationResult Validate()
        {
            if (Component is not ("transformer" or "vae" or "all"))
                return ValidationResult.Error($"--component must be transformer, vae or all, got '{Component}'.");
            if (Runs < 0) return ValidationResult.Error($"--runs must be 0 or more, got {Runs}.");
            if (!(MaxRelativeL2 > 0) || double.IsInfinity(MaxRelativeL2)) return ValidationResult.Error($"--max-relative-l2 must be a positive number, got {MaxRelativeL2}.");
            string d = Device.Trim().ToLowerInvariant();
            if (d != "cuda" && !d.StartsWith("cuda:", StringComparison.Ordinal))
                return ValidationResult.Error($"--device must be cuda or cuda:N, got '{Device}': the fixture's weights were drawn by CUDA's default generator, which a CPU generator does not reproduce.");
            return ValidationResult.Success();
        }
    }

    /// <inheritdoc />
    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var fixture = FullSizeFixture.Open(settings.Fixture ?? FindFixture());
        Device device;
        try
        {
            device = TorchDevices.Parse(settings.Device);
        }
        catch (NotSupportedException e)
        {
            // The generic hint ends with "or use --device cpu", which this check cannot do.
            string reason = e.Message.Replace(", or use --device cpu.", ".", StringComparison.Ordinal);
            throw new NotSupportedException($"check-full-size needs a CUDA device (the fixture's weights come from CUDA's default generator). {reason} See docs/gpu-checks.md.", e);
        }
        var results = new List<ComponentParity>();
        if (settings.Component is "transformer" or "all")
        {
            output.Error.WriteLine("transformer: drawing weights and running ...");
            results.Add(FullSizeParity.CheckTransformer(fixture, device, settings.Runs, cancellationToken));
        }
        if (settings.Component is "vae" or "all")
        {
            output.Error.WriteLine("vae: drawing weights and running ...");
            results.Add(FullSizeParity.CheckVae(fixture, device, settings.Runs, cancellationToken));
        }

        bool pass = results.All(r => r.Passes(settings.MaxRelativeL2));
        var root = new JsonObject
        {
            ["fixture"] = Path.GetFullPath(fixture.Folder),
            ["fixture_machine"] = fixture.Machine,
            ["device"] = device.ToString(),
            ["dtype"] = "bfloat16",
            ["max_relative_l2"] = settings.MaxRelativeL2,
            ["timed_runs"] = settings.Runs,
            ["pass"] = pass,
        };
        foreach (var r in results)
        {
            var node = new JsonObject
            {
                ["pass"] = r.Passes(settings.MaxRelativeL2),
                ["keys"] = r.Keys,
                ["expected_keys"] = r.ExpectedKeys,
            };
            if (r.Replay is { } replay)
                node["replay"] = new JsonObject { ["exact"] = replay.Exact, ["name"] = replay.Name, ["max_abs_error"] = replay.MaxAbsError };
            var outputs = new JsonObject();
            foreach (var o in r.Outputs)
                outputs[o.Name] = new JsonObject
                {
                    ["shape"] = new JsonArray(o.Shape.Select(x => (JsonNode?)x).ToArray()),
                    ["relative_l2"] = o.RelativeL2,
                    ["max_abs_error"] = o.MaxAbsError,
                    ["expected_max_abs"] = o.ExpectedMaxAbs,
                    ["expected_rms"] = o.ExpectedRms,
                };
            node["outputs"] = outputs;
            var timings = new JsonObject();
            foreach (var (k, v) in r.Timings) timings[k + "_ms"] = Math.Round(v, 3);
            if (r.Component == "transformer" && fixture.ReferenceTransformerForwardMs is { } reference)
                timings["diffusers_forward_ms"] = Math.Round(reference, 3);
            node["timings"] = timings;
            root[r.Component] = node;
        }
        output.Out.WriteLine(root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        if (!pass)
        {
            foreach (var r in results.Where(r => !r.Passes(settings.MaxRelativeL2)))
                output.Error.WriteLine($"error: {r.Component} fails: " + Why(r, settings.MaxRelativeL2));
            return ExitCodes.Failure;
        }
        return ExitCodes.Ok;
    }

    private static string Why(ComponentParity r, double max)
    {
        if (r.Keys != r.ExpectedKeys) return $"{r.Keys} weights drawn, diffusers drew {r.ExpectedKeys} (the state_dict keys differ, so every draw after the first difference differs).";
        if (r.Replay is { Exact: false } replay) return $"the drawn {replay.Name} differ from the fixture's (max |diff| {replay.MaxAbsError:G4}): the draws are not replayed, so the weights differ too.";
        return string.Join("; ", r.Outputs.Where(o => o.RelativeL2 > max).Select(o => $"{o.Name} relative L2 {o.RelativeL2:G4} > {max:G4}"));
    }

    private static string FindFixture()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, RepositoryFixture);
                if (File.Exists(Path.Combine(candidate, FullSizeFixture.MetaFileName))) return candidate;
            }
        throw new DirectoryNotFoundException($"No full-size fixture found ({RepositoryFixture} above the current folder or the program's); pass --fixture PATH.");
    }
}
