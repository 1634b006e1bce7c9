//! What the machine is (CPU, cores, kernel) and how busy it is, for the report.

use serde::Serialize;

/// Above this many runnable tasks per CPU (1-minute load average) the machine counts as loaded.
pub const LOADED_PER_CPU: f64 = 0.5;

/// The machine a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// `model name` of /proc/cpuinfo (or what stands for it on the architecture).
    pub cpu_model: Option<String>,
    /// CPUs this process may run on.
    pub cores: usize,
    /// `sysname release version machine`, as `uname -srvm`.
    pub kernel: String,
    /// The 1-minute load average before the run.
    pub load_avg_1m: Option<f64>,
}

impl Machine {
    /// Describes this machine now.
    pub fn describe() -> Machine {
        let uname = rustix::system::uname();
        let text = |s: &std::ffi::CStr| s.to_string_lossy().into_owned();
        Machine {
            cpu_model: std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|c| cpu_model(&c)),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: format!(
                "{} {} {} {}",
                text(uname.sysname()),
                text(uname.release()),
                text(uname.version()),
                text(uname.machine())
            ),
            load_avg_1m: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|l| load_1m(&l)),
        }
    }

    /// A warning when the load average says other work competes for the CPUs.
    pub fn load_warning(&self) -> Option<String> {
        let load = self.load_avg_1m?;
        let limit = LOADED_PER_CPU * self.cores as f64;
        (load > limit).then(|| {
            format!(
                "the machine is loaded: 1-minute load average {load:.2} with {} CPUs \
                 (over {limit:.1}); other work competes with the benchmark and the figures \
                 may be slower and noisier",
                self.cores
            )
        })
    }

    /// One line: CPU, cores, kernel.
    pub fn summary(&self) -> String {
        format!(
            "{}, {} CPUs, {}",
            self.cpu_model.as_deref().unwrap_or("unknown CPU"),
            self.cores,
            self.kernel
        )
    }
}

/// The CPU's name from the text of /proc/cpuinfo.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Model", "cpu model", "Hardware", "cpu"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_owned())
            })
        })
}

/// The first field of /proc/loadavg.
fn load_1m(loadavg: &str) -> Option<f64> {
    loadavg.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpuinfo_and_loadavg() {
        let info = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(
            cpu_model(info).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(cpu_model("processor : 0\n"), None);
        assert_eq!(load_1m("0.52 0.40 0.33 1/234 5678\n"), Some(0.52));
        assert_eq!(load_1m(""), None);
    }

    #[test]
    fn warns_when_loaded() {
        let mut m = Machine {
            cpu_model: None,
            cores: 2,
            kernel: String::new(),
            load_avg_1m: Some(0.9),
        };
        assert!(m.load_warning().is_none());
        m.load_avg_1m = Some(1.2);
        assert!(m.load_warning().unwrap().contains("1.20"));
        assert!(Machine::describe().cores >= 1);
    }
}
