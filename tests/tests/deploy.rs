//! Issue 13: the deployment files stay true. The systemd unit passes
//! `systemd-analyze verify` and its capabilities and arguments run traffic;
//! the DaemonSet parses with the expected kinds and its pod's arguments
//! and capabilities run traffic; the container file copies what `cargo
//! xtask dist` makes; the man page and completions come from the flags.

use std::{path::PathBuf, process::Command, time::Duration};

use traffic_tests::{Lab, TempDir, eventually, http_get, output_of, traffic_bin};
use yaml_rust2::{Yaml, YamlLoader};

fn deploy(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(deploy(name)).unwrap_or_else(|e| panic!("deploy/{name}: {e}"))
}

/// The value of `key=` in a systemd unit or an environment file.
fn setting<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in\n{text}"))
}

/// The value given to `flag` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .skip_while(|a| *a != flag)
        .nth(1)
        .map(String::as_str)
}

/// Arguments as a deployment gives them, run in the lab: the interface
/// given there is the lab's, the rules file is `rules`, and the run lasts
/// two seconds.
fn lab_args(args: &[String], lab: &Lab, rules: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        out.push(a.clone());
        match a.as_str() {
            "--iface" => {
                it.next();
                out.push(lab.rx_if.clone());
            }
            "--rules" => {
                it.next();
                out.push(rules.display().to_string());
            }
            _ => {}
        }
    }
    out.extend(["--duration".to_owned(), "2".to_owned()]);
    out
}

/// Runs `traffic ARGS` in the lab's receiving namespace under `setpriv
/// PRIV`, checks that it serves its metrics at `metrics` while it runs,
/// and that it ends well.
fn runs_and_serves(lab: &Lab, privileges: &[&str], args: &[String], metrics: &str) {
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.rx_ns, "setpriv"])
        .args(privileges)
        .arg(traffic_bin())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run traffic under setpriv");
    let served = eventually(Duration::from_secs(10), || {
        http_get(&lab.rx_ns, metrics, "/metrics")
            .is_some_and(|(status, page)| status == 200 && page.contains("traffic_packets_total"))
    });
    let out = child.wait_with_output().expect("wait for traffic");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(served, "no metrics at {metrics}; traffic said:\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn the_systemd_unit_verifies_and_its_capabilities_and_arguments_run_traffic() {
    let unit = read("traffic.service");
    let defaults = read("traffic.default");
    let dir = TempDir::new("unit");
    // The unit as installed, but for where the binary and its arguments are.
    let env = dir.0.join("traffic.default");
    std::fs::write(&env, &defaults).unwrap();
    let local = unit
        .replace(
            "/usr/local/bin/traffic",
            &traffic_bin().display().to_string(),
        )
        .replace("/etc/default/traffic", &env.display().to_string());
    let path = dir.0.join("traffic.service");
    std::fs::write(&path, local).unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze (cargo xtask test installs systemd)");
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "systemd-analyze verify:\n{said}");
    assert!(
        !said.contains("traffic.service"),
        "systemd-analyze has words about the unit:\n{said}"
    );

    let ambient = setting(&unit, "AmbientCapabilities");
    assert_eq!(ambient, setting(&unit, "CapabilityBoundingSet"));
    let caps: Vec<String> = ambient
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert_eq!(caps, ["+bpf", "+perfmon", "+net_admin"]);
    let args: Vec<String> = setting(&defaults, "TRAFFIC_ARGS")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let metrics = flag_value(&args, "--metrics")
        .expect("the default arguments serve metrics")
        .to_owned();

    // The service's user: not root, with only those capabilities.
    let lab = Lab::create("unit", 1).expect("create the lab");
    Lab::loopback_up(&lab.rx_ns).unwrap();
    let rules = dir.0.join("rules");
    std::fs::write(&rules, "drop 192.0.2.0/24\n").unwrap();
    let caps = caps.join(",");
    let privileges = [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &format!("--inh-caps={caps}"),
        &format!("--ambient-caps={caps}"),
        &format!("--bounding-set=-all,{caps}"),
        "--no-new-privs",
    ];
    runs_and_serves(&lab, &privileges, &lab_args(&args, &lab, &rules), &metrics);
}

fn field<'a>(y: &'a Yaml, path: &[&str]) -> &'a Yaml {
    path.iter().fold(y, |y, key| &y[*key])
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .map(|s| match s {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    other => panic!("not a string: {other:?}"),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_daemonset_parses_with_its_kinds_and_its_pod_runs_traffic() {
    let docs = YamlLoader::load_from_str(&read("daemonset.yaml")).expect("the manifest is YAML");
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["ConfigMap", "DaemonSet"]);
    let (config, ds) = (&docs[0], &docs[1]);
    assert_eq!(ds["apiVersion"].as_str(), Some("apps/v1"));
    let template = field(ds, &["spec", "template"]);
    let selector = field(ds, &["spec", "selector", "matchLabels"]);
    assert_eq!(
        selector, &template["metadata"]["labels"],
        "the selector selects the pods"
    );
    let annotations = field(template, &["metadata", "annotations"]);
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));
    let port = annotations["prometheus.io/port"].as_str().expect("a port");
    let pod = &template["spec"];
    assert_eq!(pod["hostNetwork"].as_bool(), Some(true));
    let container = &pod["containers"][0];
    let args = strings(&container["args"]);
    let metrics = flag_value(&args, "--metrics")
        .expect("the pod serves metrics")
        .to_owned();
    assert!(
        metrics.ends_with(&format!(":{port}")),
        "{metrics} vs port {port}"
    );
    assert_eq!(
        container["ports"][0]["containerPort"].as_i64(),
        port.parse().ok()
    );
    let security = &container["securityContext"];
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    let add = strings(&security["capabilities"]["add"]);
    assert_eq!(add, ["BPF", "PERFMON", "NET_ADMIN"]);
    // The rules file the pod reads is the ConfigMap's, mounted where the
    // arguments say.
    let mount = container["volumeMounts"][0]["mountPath"]
        .as_str()
        .expect("a mount");
    assert!(
        args.iter().any(|a| a == &format!("{mount}/rules")),
        "{args:?}"
    );
    let rules_text = config["data"]["rules"]
        .as_str()
        .expect("rules in the ConfigMap");

    // The pod: root with only the capabilities added, its arguments with
    // $(TRAFFIC_IFACE) the lab's interface, its rules the ConfigMap's.
    let lab = Lab::create("pod", 1).expect("create the lab");
    Lab::loopback_up(&lab.rx_ns).unwrap();
    let dir = TempDir::new("pod");
    let rules = dir.0.join("rules");
    std::fs::write(&rules, rules_text).unwrap();
    let caps: Vec<String> = add
        .iter()
        .map(|c| format!("+{}", c.to_lowercase()))
        .collect();
    let caps = caps.join(",");
    let bounding = format!("--bounding-set=-all,{caps}");
    let inheritable = format!("--inh-caps=-all,{caps}");
    let privileges = [bounding.as_str(), inheritable.as_str(), "--no-new-privs"];
    let metrics = metrics.replace("0.0.0.0", "127.0.0.1");
    runs_and_serves(&lab, &privileges, &lab_args(&args, &lab, &rules), &metrics);
}

#[test]
fn the_container_file_copies_what_dist_makes_and_the_binary_needs_only_glibc() {
    let file = read("Containerfile");
    let copy = file
        .lines()
        .find_map(|l| l.strip_prefix("COPY "))
        .expect("a COPY line");
    let (from, to) = copy.split_once(' ').expect("COPY FROM TO");
    assert_eq!(from, "target/dist/traffic", "what cargo xtask dist makes");
    let entry = file
        .lines()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT");
    assert_eq!(entry, format!(r#"["{to}"]"#));
    assert!(file.lines().any(|l| l.starts_with("FROM debian:")));
    // The slim image has glibc and nothing more that traffic could need.
    let ldd = output_of("ldd", &[traffic_bin().to_str().unwrap()]);
    for line in ldd.lines() {
        let lib = line.split_whitespace().next().unwrap_or_default();
        let glibc = [
            "linux-vdso.so",
            "libc.so",
            "libm.so",
            "libgcc_s.so",
            "ld-linux-x86-64.so",
            "/lib64/ld-linux-x86-64.so",
            "libpthread.so",
            "libdl.so",
        ];
        assert!(
            glibc.iter().any(|g| lib.contains(g)),
            "traffic needs {lib}, which debian:bookworm-slim may not have:\n{ldd}"
        );
    }
}

#[test]
fn the_man_page_and_completions_come_from_the_flags() {
    let dir = TempDir::new("generate");
    let generate = |kind: &str| {
        let text = output_of(traffic_bin().to_str().unwrap(), &["--generate", kind]);
        let path = dir.0.join(kind);
        std::fs::write(&path, &text).unwrap();
        (path, text)
    };
    let (man, _) = generate("man");
    let page = Command::new("man")
        .args(["--warnings", "-E", "UTF-8", "-l"])
        .arg(&man)
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .output()
        .expect("run man (cargo xtask test installs man-db)");
    let rendered = String::from_utf8_lossy(&page.stdout);
    let warnings = String::from_utf8_lossy(&page.stderr);
    assert!(page.status.success(), "{warnings}");
    assert!(warnings.trim().is_empty(), "man warns:\n{warnings}");
    for flag in ["--metrics", "--ipfix", "--iface", "--top-prefix"] {
        assert!(rendered.contains(flag), "{flag} missing from the man page");
    }
    for signal in ["SIGHUP", "SIGUSR1", "SIGUSR2", "SIGXCPU"] {
        assert!(
            rendered.contains(signal),
            "{signal} missing from the man page"
        );
    }
    // bash loads the completion and completes a flag from a prefix.
    let (bash, _) = generate("bash");
    let script = format!(
        "source {}; COMP_WORDS=(traffic --ipf); COMP_CWORD=1; _traffic traffic --ipf traffic; echo \"${{COMPREPLY[@]}}\"",
        bash.display()
    );
    let completed = output_of("bash", &["-c", &script]);
    assert!(
        completed.contains("--ipfix") && completed.contains("--ipfix-tcp"),
        "bash completes --ipf as: {completed}"
    );
    for (kind, shell) in [("zsh", "zsh"), ("fish", "fish")] {
        let (path, text) = generate(kind);
        assert!(text.contains("ipfix"), "{kind}");
        // Syntax-checked where the shell is installed.
        if Command::new(shell).arg("-c").arg("true").output().is_ok() {
            let ok = Command::new(shell)
                .arg("-n")
                .arg(&path)
                .status()
                .unwrap()
                .success();
            assert!(ok, "{shell} -n {}", path.display());
        }
    }
    for kind in ["elvish", "powershell"] {
        assert!(generate(kind).1.contains("ipfix"), "{kind}");
    }
}
