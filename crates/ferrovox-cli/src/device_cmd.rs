//! `ferrovox device` and `ferrovox doctor`.

use ferrovox_device::doctor::{self, Status};
use ferrovox_device::{DeviceReport, DeviceRequest, Runtime, TuningConfig};

pub fn device(request: &DeviceRequest, tuning: &TuningConfig, json: bool) -> anyhow::Result<()> {
    let runtime = Runtime::init(request, tuning)?;
    let report = DeviceReport::new(&runtime);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}

/// Returns false when a check failed.
pub fn doctor(request: &DeviceRequest, tuning: &TuningConfig, json: bool) -> anyhow::Result<bool> {
    let runtime = Runtime::init(request, tuning)?;
    let report = DeviceReport::new(&runtime);
    let checks = doctor::run_all(&runtime);
    let ok = checks.iter().all(|c| c.status != Status::Fail);
    if json {
        let out = serde_json::json!({ "device": report, "checks": checks, "ok": ok });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{report}\n");
        for c in &checks {
            let tag = match c.status {
                Status::Pass => "PASS",
                Status::Fail => "FAIL",
                Status::Skip => "SKIP",
            };
            println!("{tag}  {:<18} {}", c.name, c.detail);
        }
        let count = |s| checks.iter().filter(|c| c.status == s).count();
        println!(
            "\n{} passed, {} failed, {} skipped",
            count(Status::Pass),
            count(Status::Fail),
            count(Status::Skip)
        );
    }
    Ok(ok)
}
