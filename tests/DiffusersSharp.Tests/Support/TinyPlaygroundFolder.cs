using System.Text.Json.Nodes;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// A Playground-v2.5-like pipeline folder written for tests from tiny-sdxl: the VAE config carries Playground v2.5's
/// latents_mean / latents_std and scaling_factor 0.5, the scheduler is EDMDPMSolverMultistepScheduler with Playground's
/// config (model_index.json names it), the rest tiny-sdxl's files. Matches tools/reference/edm_sdxl.py.
/// </summary>
public static class TinyPlaygroundFolder
{
    /// <summary>Playground v2.5's scheduler_config.json values (EDMDPMSolverMultistepScheduler's defaults spelled out).</summary>
    public const string SchedulerConfig = """
        {"_class_name": "EDMDPMSolverMultistepScheduler", "algorithm_type": "dpmsolver++", "dynamic_thresholding_ratio": 0.995,
         "euler_at_final": false, "final_sigmas_type": "zero", "lower_order_final": true, "num_train_timesteps": 1000,
         "prediction_type": "epsilon", "rho": 7.0, "sample_max_value": 1.0, "sigma_data": 0.5, "sigma_max": 80.0,
         "sigma_min": 0.002, "sigma_schedule": "karras", "solver_order": 2, "solver_type": "midpoint", "thresholding": false}
        """;

    /// <summary>CosXL's scheduler: <c>EDMEulerScheduler(sigma_min=0.002, sigma_max=120.0, sigma_data=1.0,
    /// prediction_type="v_prediction", sigma_schedule="exponential")</c>.</summary>
    public const string CosXLSchedulerConfig = """
        {"_class_name": "EDMEulerScheduler", "sigma_min": 0.002, "sigma_max": 120.0, "sigma_data": 1.0,
         "prediction_type": "v_prediction", "sigma_schedule": "exponential"}
        """;

    /// <summary>Writes the folder at <paramref name="dir"/>.</summary>
    public static void Write(string dir)
    {
        string source = Fixtures.Path("tiny-sdxl/model");
        foreach (string file in Directory.GetFiles(source, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(dir, Path.GetRelativePath(source, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
        void Rewrite(string file, Action<JsonObject> change)
        {
            var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, file)))!.AsObject();
            change(json);
            File.WriteAllText(Path.Combine(dir, file), json.ToJsonString());
        }
        Rewrite("model_index.json", j => j["scheduler"] = new JsonArray("diffusers", "EDMDPMSolverMultistepScheduler"));
        File.WriteAllText(Path.Combine(dir, "scheduler", "scheduler_config.json"), SchedulerConfig);
        Rewrite(Path.Combine("vae", "config.json"), j =>
        {
            j["latents_mean"] = new JsonArray(-1.6574, 1.886, -1.383, 2.5155);
            j["latents_std"] = new JsonArray(8.4927, 5.9022, 6.5498, 5.2299);
            j["scaling_factor"] = 0.5;
        });
    }
}
