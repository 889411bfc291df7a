namespace DiffusersSharp.Schedulers;

/// <summary><c>scheduler_config.json</c> of an <c>EDMEulerScheduler</c> (CosXL); defaults are the Python constructor defaults.</summary>
public sealed record EDMEulerSchedulerConfig : EDMSchedulerConfigBase;
