//! `trellis`: the Trellis control plane and its tools.
//!
//! - `trellis serve` runs the control plane: sources (a config directory, or the Kubernetes API
//!   with `--kubernetes`) -> translate -> snapshots -> ADS, and status back.
//! - `trellis bootstrap` prints the Envoy bootstrap a gateway proxy starts with.
//! - `trellis capture` installs (or prints) the rules that send a pod's traffic through its
//!   sidecar.
//! - `trellis status` prints the status the control plane reports.
//! - `trellis proxy-status` prints each proxy's sync state (SYNCED / STALE / NACKED per type).
//! - `trellis mtls-status` prints each pod's identity and mutual-TLS mode, with the
//!   handshakes its sidecar saw.
//! - `trellis token` and `trellis agent`: workload identity (see their modules).

mod admin;
mod agent;
mod bootstrap;
mod capture;
mod console;
mod explain;
mod injection;
mod kubernetes;
mod memory;
mod mtls_status;
mod proxy_status;
mod render;
mod serve;
mod status;
mod telemetry;
mod token;
mod vet;

use clap::{Parser, Subcommand};

/// Trellis: a Gateway API control plane for stock Envoy.
#[derive(Debug, Parser)]
#[command(name = "trellis", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane.
    Serve(Box<serve::ServeArgs>),
    /// Print an Envoy bootstrap for a proxy serving one Gateway.
    Bootstrap(bootstrap::BootstrapArgs),
    /// Install (or print, or remove) the rules that send a pod's traffic through its sidecar,
    /// in the current network namespace.
    Capture(capture::CaptureArgs),
    /// Print the status of Gateway API objects as the control plane reports it.
    Status(status::StatusArgs),
    /// Print every connected proxy's sync state per resource type.
    ProxyStatus(proxy_status::ProxyStatusArgs),
    /// Print each pod's identity and mutual-TLS mode, with the handshakes its sidecar saw.
    MtlsStatus(mtls_status::MtlsStatusArgs),
    /// Print a token saying which pod its holder is, for the certificate service (file mode).
    Token(token::TokenArgs),
    /// Beside an Envoy: obtain and renew the workload's certificate, serve it over SDS.
    Agent(agent::AgentArgs),
    /// Check a directory of Kubernetes YAML for mistakes, offline (exit status 1 on errors).
    Vet(vet::VetArgs),
    /// Print the Envoy configuration a Gateway's proxies or a pod's sidecar would receive,
    /// offline, from a directory of Kubernetes YAML.
    Render(render::RenderArgs),
    /// Explain which route and backend a request would take through a Gateway or from a pod,
    /// and why a 404 or a 500 (offline on a directory, or online).
    Explain(Box<explain::ExplainArgs>),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Vet(args) => return vet::run(&args),
        Command::Serve(args) => serve::run(*args),
        Command::Bootstrap(args) => bootstrap::run(&args),
        Command::Capture(args) => capture::run(&args),
        Command::Status(args) => status::run_command(&args),
        Command::ProxyStatus(args) => proxy_status::run(&args),
        Command::MtlsStatus(args) => mtls_status::run(&args),
        Command::Token(args) => token::run(&args),
        Command::Agent(args) => agent::run(&args),
        Command::Render(args) => render::run(&args),
        Command::Explain(args) => explain::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("trellis").chain(args.iter().copied()))
    }

    #[test]
    fn serve_takes_exactly_one_source() {
        assert!(parse(&["serve", "--config-dir", "x"]).is_ok());
        assert!(parse(&["serve", "--kubernetes"]).is_ok());
        assert!(
            parse(&[
                "serve",
                "--kubernetes",
                "--kubeconfig",
                "kc",
                "--watch-namespaces",
                "a,b"
            ])
            .is_ok()
        );
        assert!(parse(&["serve"]).is_err(), "no source");
        assert!(
            parse(&["serve", "--config-dir", "x", "--kubernetes"]).is_err(),
            "two sources"
        );
        let checked = |args: &[&str]| match parse(args) {
            Ok(Cli {
                command: Command::Serve(a),
            }) => serve::check_source(&a).is_ok(),
            _ => false,
        };
        assert!(
            !checked(&["serve", "--config-dir", "x", "--kubeconfig", "kc"]),
            "--kubeconfig belongs to --kubernetes"
        );
        assert!(checked(&["serve", "--kubernetes", "--kubeconfig", "kc"]));
        let Ok(Cli {
            command: Command::Serve(args),
        }) = parse(&["serve", "--kubernetes", "--watch-namespaces", "a,b"])
        else {
            panic!("parses")
        };
        assert_eq!(args.kube.watch_namespaces, ["a", "b"]);
        assert_eq!(args.kube.leader_election_lease_seconds, 15);
    }

    #[test]
    fn xds_is_mutual_tls_unless_plaintext_is_asked_for_on_loopback() {
        let checked = |args: &[&str]| match parse(args) {
            Ok(Cli {
                command: Command::Serve(a),
            }) => serve::check_xds(&a).map_err(|e| e.to_string()),
            _ => Err("does not parse".to_string()),
        };
        // File mode needs a CA, or plaintext by choice.
        let e = checked(&["serve", "--config-dir", "x"]).unwrap_err();
        assert!(
            e.contains("--ca-dir") && e.contains("--insecure-xds"),
            "{e}"
        );
        assert!(checked(&["serve", "--config-dir", "x", "--ca-dir", "ca"]).is_ok());
        assert!(checked(&["serve", "--config-dir", "x", "--insecure-xds"]).is_ok());
        // Plaintext only on loopback, even with a CA.
        for source in [&["--config-dir", "x"][..], &["--kubernetes"][..]] {
            let mut args = vec!["serve"];
            args.extend_from_slice(source);
            args.extend(["--insecure-xds", "--xds-address", "0.0.0.0:18000"]);
            let e = checked(&args).unwrap_err();
            assert!(e.contains("not a loopback address"), "{e}");
        }
        // Kubernetes mode keeps its CA in a Secret.
        assert!(checked(&["serve", "--kubernetes", "--xds-address", "0.0.0.0:18000"]).is_ok());
    }
}
