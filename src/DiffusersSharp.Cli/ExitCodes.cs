using DiffusersSharp.IO;
using Spectre.Console.Cli;

namespace DiffusersSharp.Cli;

/// <summary>The CLI contract's exit codes and which failures count as invalid input.</summary>
public static class ExitCodes
{
    /// <summary>Success.</summary>
    public const int Ok = 0;
    /// <summary>Any failure that is not the caller's input.</summary>
    public const int Failure = 1;
    /// <summary>Invalid input: bad arguments, unreadable or malformed files, models that do not fit their configs.</summary>
    public const int InvalidInput = 2;

    /// <summary>Whether <paramref name="e"/> is the caller's input being wrong (exit code 2).</summary>
    public static bool IsInvalidInput(Exception e) => e is CommandParseException or CommandRuntimeException or ArgumentException
        or FileNotFoundException or DirectoryNotFoundException or InvalidDataException or SafetensorsFormatException
        or WeightLoadException or UnknownComponentException or DiffusersSharp.Hub.HubException { IsInvalidInput: true };

    /// <summary>The exception's message on one line.</summary>
    public static string OneLine(Exception e) => string.Join(' ', e.Message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
}
