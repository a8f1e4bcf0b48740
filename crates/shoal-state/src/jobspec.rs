//! Job spec files: TOML (or JSON) text → a checked [`JobSpec`]. The CLI parses a file
//! with this before sending it, and the manager parses the same text again, so a bad
//! spec is refused the same way wherever it is caught. Every error names the file, the
//! workflow and the field.
//!
//! ```toml
//! name = "nightly"
//! timeout_s = 600                 # the whole job
//! strategy = "least_connections"  # round_robin | random | least_connections
//! [[workflows]]
//! name = "load"
//! kind = "exec"                   # exec | sleep | echo | fail | cpu | a custom kind
//! args = { command = "./run.sh", args = ["--users", "100"], env = { A = "1" } }
//! instances = 8                   # parallel copies (default 1)
//! cores = 1                       # per instance (default 1)
//! timeout_s = 60                  # per attempt
//! max_retries = 2                 # default 0
//! constraints = { gpu = "true" }  # worker tags that must match
//! after = ["build"]               # workflows that must complete first
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::jobs::{JobSpec, Work, WorkflowSpec};

/// Spec text formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

impl Format {
    /// From a name (`toml`, `json`), or guessed from the text when empty: JSON if it
    /// starts with `{`.
    pub fn pick(name: &str, text: &str) -> Result<Self, String> {
        match name {
            "toml" => Ok(Format::Toml),
            "json" => Ok(Format::Json),
            "" if text.trim_start().starts_with('{') => Ok(Format::Json),
            "" => Ok(Format::Toml),
            other => Err(format!("format: `{other}` is not toml or json")),
        }
    }

    /// Its name, as [`Format::pick`] takes it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Toml => "toml",
            Format::Json => "json",
        }
    }

    /// From a file name's extension (`.json` → JSON, anything else TOML).
    pub fn of_path(path: &str) -> Self {
        if path.to_ascii_lowercase().ends_with(".json") {
            Format::Json
        } else {
            Format::Toml
        }
    }
}

/// A job id made from the spec's name: `<name (≤ 50 chars)>-<salt as 8 hex digits>`.
/// The caller draws `salt` at random (this crate stays free of randomness).
pub fn job_id(name: &str, salt: u32) -> String {
    let stem: String = name.chars().take(50).collect();
    format!("{stem}-{salt:08x}")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    timeout_s: Option<u64>,
    strategy: Option<String>,
    datacenters: Option<Vec<String>>,
    datacenter_count: Option<u32>,
    #[serde(default)]
    workflows: Vec<RawWorkflow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkflow {
    name: String,
    kind: String,
    args: Option<Value>,
    instances: Option<u32>,
    cores: Option<u32>,
    timeout_s: Option<u64>,
    max_retries: Option<u32>,
    #[serde(default)]
    constraints: BTreeMap<String, String>,
    #[serde(default)]
    after: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecArgs {
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepArgs {
    ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EchoArgs {
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailArgs {
    #[serde(default = "one")]
    times: u32,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CpuArgs {
    iterations: u64,
}

fn typed<T: serde::de::DeserializeOwned>(at: &str, args: Option<Value>) -> Result<T, String> {
    let v = args.unwrap_or(Value::Object(Default::default()));
    serde_json::from_value(v).map_err(|e| format!("{at}.args: {e}"))
}

fn work(at: &str, kind: &str, args: Option<Value>) -> Result<Work, String> {
    Ok(match kind {
        "exec" => {
            let a: ExecArgs = typed(at, args)?;
            Work::Exec {
                command: a.command,
                args: a.args,
                env: a.env,
                cwd: a.cwd,
            }
        }
        "sleep" => Work::Sleep {
            ms: typed::<SleepArgs>(at, args)?.ms,
        },
        "echo" => Work::Echo {
            text: typed::<EchoArgs>(at, args)?.text,
        },
        "fail" => Work::Fail {
            times: typed::<FailArgs>(at, args)?.times,
        },
        "cpu" => Work::Cpu {
            iterations: typed::<CpuArgs>(at, args)?.iterations,
        },
        custom => Work::Custom {
            kind: custom.to_string(),
            args: args.map_or_else(|| "{}".to_string(), |v| v.to_string()),
        },
    })
}

/// Where a multi-datacenter spec would run; a datacenter's managers take only jobs for
/// themselves (gates split the rest).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    pub datacenters: Vec<String>,
    pub datacenter_count: Option<u32>,
}

/// Parses and checks spec text; `source` (a file name) prefixes every error.
pub fn parse(text: &str, format: Format, source: &str) -> Result<(JobSpec, Placement), String> {
    let raw: RawSpec = match format {
        Format::Toml => {
            toml::from_str(text).map_err(|e| format!("{source}: {}", e.to_string().trim()))?
        }
        Format::Json => serde_json::from_str(text).map_err(|e| format!("{source}: {e}"))?,
    };
    let mut workflows = Vec::with_capacity(raw.workflows.len());
    for (i, w) in raw.workflows.into_iter().enumerate() {
        let at = format!("workflows[{i}] ({})", w.name);
        let work = work(&at, &w.kind, w.args).map_err(|e| format!("{source}: {e}"))?;
        workflows.push(WorkflowSpec {
            name: w.name,
            work,
            instances: w.instances.unwrap_or(1),
            cores: w.cores.unwrap_or(1),
            timeout_s: w.timeout_s,
            max_retries: w.max_retries.unwrap_or(0),
            constraints: w.constraints,
            after: w.after,
        });
    }
    let spec = JobSpec {
        name: raw.name,
        timeout_s: raw.timeout_s,
        strategy: raw.strategy,
        workflows,
    };
    spec.validate().map_err(|e| {
        // Name the workflow as well as its position.
        let mut msg = e.to_string();
        for (i, w) in spec.workflows.iter().enumerate() {
            let at = format!("workflows[{i}]");
            if msg.starts_with(&at) && !msg.starts_with(&format!("{at} (")) {
                msg = format!("{at} ({}){}", w.name, &msg[at.len()..]);
                break;
            }
        }
        format!("{source}: {msg}")
    })?;
    if raw.datacenter_count == Some(0) {
        return Err(format!("{source}: datacenter_count: must be at least 1"));
    }
    for dc in raw.datacenters.iter().flatten() {
        crate::jobs::check_name("datacenters", dc).map_err(|e| format!("{source}: {e}"))?;
    }
    Ok((
        spec,
        Placement {
            datacenters: raw.datacenters.unwrap_or_default(),
            datacenter_count: raw.datacenter_count,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "nightly"
timeout_s = 600
[[workflows]]
name = "build"
kind = "echo"
args = { text = "hi" }
[[workflows]]
name = "load"
kind = "exec"
args = { command = "./run.sh", args = ["--users", "100"], env = { A = "1" } }
instances = 8
cores = 2
timeout_s = 60
max_retries = 2
constraints = { gpu = "true" }
after = ["build"]
"#;

    #[test]
    fn a_full_spec_parses() {
        let (spec, _) = parse(GOOD, Format::Toml, "job.toml").unwrap();
        assert_eq!(spec.workflows.len(), 2);
        let load = &spec.workflows[1];
        assert_eq!(load.instances, 8);
        assert_eq!(load.cores, 2);
        assert_eq!(load.after, vec!["build".to_string()]);
        match &load.work {
            Work::Exec {
                command,
                args,
                env,
                cwd,
            } => {
                assert_eq!(command, "./run.sh");
                assert_eq!(args.len(), 2);
                assert_eq!(env.get("A").map(String::as_str), Some("1"));
                assert!(cwd.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_is_accepted_too() {
        let text =
            r#"{"name": "j", "workflows": [{"name": "s", "kind": "sleep", "args": {"ms": 5}}]}"#;
        let format = Format::pick("", text).unwrap();
        assert_eq!(format, Format::Json);
        let (spec, _) = parse(text, format, "job.json").unwrap();
        assert_eq!(spec.workflows[0].work, Work::Sleep { ms: 5 });
        assert_eq!(spec.workflows[0].instances, 1);
    }

    fn error(text: &str) -> String {
        parse(text, Format::Toml, "job.toml").unwrap_err()
    }

    #[test]
    fn errors_name_the_file_the_workflow_and_the_field() {
        let e = error("name = \"j\"\n[[workflows]]\nname = \"a\"\nkind = \"exec\"\nargs = {}\n");
        assert!(e.starts_with("job.toml: workflows[0] (a).args"), "{e}");
        assert!(e.contains("command"), "{e}");

        let e = error(
            "name = \"j\"\n[[workflows]]\nname = \"a\"\nkind = \"echo\"\nargs = { text = \"x\" }\ninstances = 0\n",
        );
        assert!(e.starts_with("job.toml: workflows[0] (a).instances"), "{e}");

        let e = error(
            "name = \"j\"\n[[workflows]]\nname = \"a\"\nkind = \"echo\"\nargs = { text = \"x\" }\nafter = [\"zz\"]\n",
        );
        assert!(
            e.contains("workflows[0] (a).after") && e.contains("zz"),
            "{e}"
        );

        let e = error("name = \"j\"\nworkflows = [\n");
        assert!(e.starts_with("job.toml:"), "{e}");

        let e = error("name = \"j\"\nbogus = 1\n");
        assert!(e.contains("bogus"), "{e}");

        let e = error(
            "name = \"j\"\n[[workflows]]\nname = \"a\"\nkind = \"sleep\"\nargs = { ms = 1, extra = 2 }\n",
        );
        assert!(
            e.contains("workflows[0] (a).args") && e.contains("extra"),
            "{e}"
        );
    }

    #[test]
    fn the_example_specs_parse() {
        for (name, text) in [
            ("hello.toml", include_str!("../../../examples/hello.toml")),
            (
                "nightly.toml",
                include_str!("../../../examples/nightly.toml"),
            ),
            ("retry.toml", include_str!("../../../examples/retry.toml")),
            ("render.toml", include_str!("../../../examples/render.toml")),
            ("cpu.json", include_str!("../../../examples/cpu.json")),
        ] {
            if let Err(e) = parse(text, Format::of_path(name), name) {
                panic!("{e}");
            }
        }
    }

    #[test]
    fn unknown_kinds_parse_as_custom_for_the_manager_to_check() {
        let (spec, _) = parse(
            "name = \"j\"\n[[workflows]]\nname = \"a\"\nkind = \"render\"\nargs = { frames = 3 }\n",
            Format::Toml,
            "j.toml",
        )
        .unwrap();
        assert_eq!(
            spec.workflows[0].work,
            Work::Custom {
                kind: "render".into(),
                args: "{\"frames\":3}".into()
            }
        );
    }
}
