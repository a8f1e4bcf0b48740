//! Secure by default, as a user meets it: `shoal dev` makes a CA and an admin token and
//! runs every child with TLS; the README's tour works from the same directory with no
//! flags (the CLI finds the CA and token); tokens made with `shoal tokens` carry their
//! permissions; `shoal certs` + `shoal node --tls-dir` run a node by hand; a node with
//! neither TLS nor `--insecure` refuses to start.

mod common;

use std::{path::Path, time::Duration};

use common::*;

#[test]
fn the_readme_tour_runs_against_a_secure_dev_cluster() {
    let dir = tempdir::Dir::new("secure-dev");
    let cwd = dir.path();
    let dev = Dev::start(cwd, [3, 0, 1], 26_000);
    let (lines, base) = (&dev.lines, dev.base);
    expect_line(lines, "the verdict", |l| l == "HEALTHY");
    let tls_line = expect_line(lines, "the TLS line", |l| l.starts_with("TLS on"));
    let token = tls_line
        .split_whitespace()
        .find(|w| w.starts_with("shoal_"))
        .unwrap_or_else(|| panic!("no token in {tls_line}"))
        .to_string();
    let addr = format!("127.0.0.1:{base}");
    let servers = format!(
        "127.0.0.1:{base},127.0.0.1:{},127.0.0.1:{}",
        base + 2,
        base + 4
    );

    // The tour, with no security flags: the CLI finds .shoal/dev/tls from here.
    let status = ok(cwd, &["status", "--addr", &addr]);
    assert!(
        status.contains("HEALTHY") && !status.contains("INSECURE"),
        "{status}"
    );
    assert!(
        ok(
            cwd,
            &["kv", "put", "greeting", "hello", "--servers", &servers]
        )
        .starts_with("OK")
    );
    assert_eq!(
        ok(cwd, &["kv", "get", "greeting", "--servers", &servers]).trim(),
        "hello"
    );
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello.toml");
    let submitted = ok(
        cwd,
        &[
            "submit",
            hello.to_str().unwrap(),
            "--wait",
            "--servers",
            &servers,
        ],
    );
    assert!(submitted.contains("completed"), "{submitted}");
    ok(
        cwd,
        &["chat", "rooms", "create", "general", "--servers", &servers],
    );
    ok(
        cwd,
        &[
            "chat",
            "send",
            "--room",
            "general",
            "--user",
            "bob",
            "hi ann",
            "--servers",
            &servers,
        ],
    );
    let history = ok(
        cwd,
        &[
            "chat",
            "history",
            "--room",
            "general",
            "--servers",
            &servers,
        ],
    );
    assert!(history.contains("hi ann"), "{history}");
    let managers = ok(cwd, &["managers", "ls", "--addr", &addr]);
    assert!(
        managers.contains("m1") && managers.contains("m3"),
        "{managers}"
    );

    // From elsewhere nothing is found: the node answers 401, or the hint names the fix.
    let elsewhere = tempdir::Dir::new("elsewhere");
    let (code, _, err) = run_in(elsewhere.path(), &["status", "--addr", &addr], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("TLS"), "{err}");
    let ca = cwd.join(".shoal/dev/tls/ca.pem");
    let ca = ca.to_str().unwrap();
    let (code, _, err) = run_in(
        elsewhere.path(),
        &["status", "--addr", &addr],
        &[("SHOAL_CA", ca)],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("401") && err.contains("no credentials"),
        "{err}"
    );
    let with_token = [("SHOAL_CA", ca), ("SHOAL_TOKEN", token.as_str())];
    let (code, out, err) = run_in(elsewhere.path(), &["status", "--addr", &addr], &with_token);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("HEALTHY"), "{out}");

    // A read token reads and is refused a write (exit 2, the permission named).
    let created = ok(
        cwd,
        &["tokens", "create", "ci", "--perms", "read", "--addr", &addr],
    );
    let ci = created
        .split_whitespace()
        .find(|w| w.starts_with("shoal_"))
        .unwrap_or_else(|| panic!("no token in {created}"))
        .to_string();
    assert!(ok(cwd, &["tokens", "ls", "--addr", &addr]).contains("ci"));
    let as_ci = ["--token", ci.as_str()];
    let get = [
        &["kv", "get", "greeting", "--servers", &servers][..],
        &as_ci,
    ]
    .concat();
    assert_eq!(ok(cwd, &get).trim(), "hello");
    let put = [&["kv", "put", "k", "v", "--servers", &servers][..], &as_ci].concat();
    let (code, _, err) = run_in(cwd, &put, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs `write`"), "{err}");
    ok(cwd, &["tokens", "revoke", "ci", "--addr", &addr]);
    // Revoked on every manager once each has applied the entry.
    for port in [base, base + 2, base + 4] {
        let at = format!("127.0.0.1:{port}");
        let status = [&["status", "--addr", &at][..], &as_ci].concat();
        wait_for("the revoked token refused", Duration::from_secs(10), || {
            let (code, _, err) = run_in(cwd, &status, &[]);
            code != 0 && err.contains("not recognised")
        });
    }

    drop(dev);
}

#[test]
fn certs_and_a_node_by_hand() {
    let dir = tempdir::Dir::new("certs");
    let tls = dir.path().join("tls");
    let tls_s = tls.to_str().unwrap().to_string();
    let init = ok(dir.path(), &["certs", "init", "--dir", &tls_s]);
    assert!(init.contains("admin token: shoal_"), "{init}");
    let (code, _, err) = run_in(dir.path(), &["certs", "init", "--dir", &tls_s], &[]);
    assert_eq!(code, 2, "a second init must not overwrite the CA: {err}");
    ok(
        dir.path(),
        &["certs", "issue", "--dir", &tls_s, "--node", "m1"],
    );
    let (code, _, err) = run_in(
        dir.path(),
        &["certs", "issue", "--dir", &tls_s, "--client", "bad name"],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("name: must be"), "{err}");

    // Neither TLS nor --insecure: refused with the rule and the way out.
    let (code, _, err) = run_in(
        dir.path(),
        &[
            "node",
            "--role",
            "manager",
            "--id",
            "m1",
            "--listen",
            "127.0.0.1:0",
            "--cluster-key",
            KEY,
        ],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("tls_dir: is required unless --insecure"),
        "{err}"
    );
    // A certificate of another node is refused at start.
    let (code, _, err) = run_in(
        dir.path(),
        &[
            "node",
            "--role",
            "manager",
            "--id",
            "m2",
            "--listen",
            "127.0.0.1:0",
            "--cluster-key",
            KEY,
            "--tls-dir",
            &tls_s,
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("m2.pem"), "{err}");

    // With its certificate the node serves TLS; the token from init works against it.
    let data = tempdir::Dir::new("certs-m1");
    let mut m1 = start_node_in(
        "m1",
        "127.0.0.1:0",
        &[],
        Some(KEY),
        data,
        &[
            "--role",
            "manager",
            "--bootstrap-expect",
            "1",
            "--tls-dir",
            &tls_s,
        ],
    );
    let env = [("SHOAL_TLS_DIR", tls_s.as_str())];
    let addr = m1.tcp.to_string();
    wait_for("the node answers over TLS", Duration::from_secs(20), || {
        run_in(
            dir.path(),
            &["kv", "put", "a", "b", "--servers", &addr],
            &env,
        )
        .0 == 0
    });
    let (_, out, _) = run_in(dir.path(), &["status", "--addr", &addr], &env);
    assert!(
        out.contains("HEALTHY") && !out.contains("INSECURE"),
        "{out}"
    );
    m1.kill9();
}
