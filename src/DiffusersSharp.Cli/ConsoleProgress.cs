using System.Diagnostics;
using DiffusersSharp.Pipelines;

namespace DiffusersSharp.Cli;

/// <summary>A progress bar on stderr: redrawn in place on a terminal, one line per finished stage otherwise.</summary>
public sealed class ConsoleProgress(TextWriter error, bool interactive) : IProgress<PipelineProgress>
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private string _stage = "";
    private long _stageStart;

    /// <summary>A progress bar for the process's stderr.</summary>
    public static ConsoleProgress ForStderr(TextWriter error) =>
        new(error, ReferenceEquals(error, Console.Error) && !Console.IsErrorRedirected);

    /// <inheritdoc />
    public void Report(PipelineProgress value)
    {
        if (value.Stage != _stage)
        {
            _stage = value.Stage;
            _stageStart = _clock.ElapsedMilliseconds;
        }
        double seconds = (_clock.ElapsedMilliseconds - _stageStart) / 1000.0;
        bool done = value.Step >= value.TotalSteps;
        if (interactive)
        {
            const int width = 30;
            int filled = value.TotalSteps == 0 ? width : width * value.Step / value.TotalSteps;
            string rate = value.Step > 0 && seconds > 0 ? $" {value.Step / seconds:F2} it/s" : "";
            error.Write($"\r{value.Stage,-8} [{new string('#', filled)}{new string('-', width - filled)}] {value.Step}/{value.TotalSteps} {seconds:F1}s{rate}   ");
            if (done) error.WriteLine();
        }
        else if (done)
        {
            error.WriteLine($"{value.Stage}: {value.Step}/{value.TotalSteps} in {seconds:F2}s");
        }
    }
}
