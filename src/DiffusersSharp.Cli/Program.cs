using DiffusersSharp.Cli;

return CliApp.Run(args);
