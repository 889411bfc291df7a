using System.ComponentModel;
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
    }

    /// <inheritdoc />
    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        output.Out.WriteLine("{}");
        return 0;
    }
}
