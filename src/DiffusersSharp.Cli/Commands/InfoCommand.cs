using System.ComponentModel;
using System.Text.Json;
using System.Text.Json.Nodes;
using DiffusersSharp.Models;
using DiffusersSharp.Runtime;
using Spectre.Console.Cli;

namespace DiffusersSharp.Cli.Commands;

/// <summary><c>diffusers info --model M</c>: JSON describing each component without loading weights.</summary>
public sealed class InfoCommand(CliOutput output) : Command<InfoCommand.Settings>
{
    /// <summary>Options of <c>info</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        /// <summary>Model folder (diffusers layout), a component folder, or a safetensors file.</summary>
        [CommandOption("--model <MODEL>")]
        [Description("Model folder in the diffusers layout, a component folder or a .safetensors file.")]
        public string Model { get; init; } = "";

        /// <inheritdoc />
        public override Spectre.Console.ValidationResult Validate() => string.IsNullOrWhiteSpace(Model)
            ? Spectre.Console.ValidationResult.Error("--model is required.")
            : Spectre.Console.ValidationResult.Success();
    }

    /// <inheritdoc />
    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var info = ModelInspector.Inspect(settings.Model);
        var components = new JsonObject();
        foreach (var c in info.Components)
        {
            components[c.Name] = new JsonObject
            {
                ["library"] = c.Library,
                ["class"] = c.ClassName,
                ["kind"] = c.Kind.ToString().ToLowerInvariant(),
                ["source"] = c.Source,
                ["dtypes"] = new JsonArray(c.Dtypes.Select(d => (JsonNode?)JsonValue.Create(d)).ToArray()),
                ["tensors"] = c.Tensors,
                ["parameters"] = c.Elements,
                ["files"] = new JsonArray(c.Files.Select(f => (JsonNode?)JsonValue.Create(f)).ToArray()),
                ["config"] = c.Config?.DeepClone(),
            };
        }
        var root = new JsonObject
        {
            ["model"] = info.Path,
            ["pipeline"] = info.PipelineClass,
            ["parameters"] = info.Components.Sum(c => c.Elements ?? 0),
            ["components"] = components,
        };
        output.Out.WriteLine(root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return ExitCodes.Ok;
    }
}
