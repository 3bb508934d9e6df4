//! `trellis bootstrap`: the Envoy bootstrap for a gateway proxy, or (`--pod`) for a sidecar.
//!
//! The bootstrap names the Gateway the proxy serves (node metadata `trellis.dev/gateway`, and
//! the node cluster) or the pod a sidecar serves (`trellis.dev/pod`), points ADS at the control
//! plane over HTTP/2 with a fast reconnect back-off, keeps Envoy's admin interface on loopback,
//! raises RE2's program-size limit (the control plane bounds expressions itself) and caps
//! downstream connections. A sidecar's bootstrap also answers readiness on 15021
//! (`/healthz/ready`: ready once Envoy has applied its configuration from the control plane)
//! and Prometheus stats on 15090 (`/stats/prometheus`), with admin on `127.0.0.1:15000`.

use anyhow::{Context, bail};
use clap::Args;
use std::net::IpAddr;

pub use trellis_controller::node::{GATEWAY_METADATA_KEY, POD_METADATA_KEY};

/// Arguments of `trellis bootstrap`.
#[derive(Debug, Args)]
pub struct BootstrapArgs {
    /// The Gateway this proxy serves, as NAMESPACE/NAME.
    #[arg(long, required_unless_present = "pod", conflicts_with = "pod")]
    pub gateway: Option<String>,
    /// The pod this sidecar serves, as NAMESPACE/NAME.
    #[arg(long)]
    pub pod: Option<String>,
    /// The control plane's xDS address, HOST:PORT. Several (repeated or comma-separated) make
    /// one ADS cluster with an endpoint each: the proxy connects to one and fails over to
    /// another, as it would through a Service in front of control-plane replicas.
    #[arg(long, default_value = "127.0.0.1:18000", value_delimiter = ',')]
    pub xds_address: Vec<String>,
    /// Use incremental (Delta) ADS instead of state-of-the-world.
    #[arg(long)]
    pub delta: bool,
    /// The proxy's node id; defaults to `<namespace>.<name>.<hostname>` for a gateway proxy,
    /// `<name>.<namespace>` for a sidecar.
    #[arg(long)]
    pub node_id: Option<String>,
    /// Address of Envoy's admin interface.
    #[arg(long, default_value = "127.0.0.1")]
    pub admin_address: String,
    /// Port of Envoy's admin interface (0 picks a free port; read it with
    /// `envoy --admin-address-path`); 19000 for a gateway proxy and 15000 for a sidecar when
    /// not given.
    #[arg(long)]
    pub admin_port: Option<u16>,
    /// The agent's SDS socket (`trellis agent --sds-socket`): the bootstrap then defines the
    /// `trellis-sds` cluster through which Envoy loads its certificate (`default`) and root
    /// (`ROOTCA`).
    #[arg(long)]
    pub sds_socket: Option<std::path::PathBuf>,
    /// With `--sds-socket`, the proxy also authenticates to the control plane with that
    /// certificate (mutual TLS on xDS, verifying the control plane's identity); this keeps xDS
    /// plaintext instead, for a control plane run with `--insecure-xds`.
    #[arg(long)]
    pub insecure_xds: bool,
    /// The trust domain, for the control plane's identity.
    #[arg(long, default_value = trellis_ca::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// The control plane's namespace (`trellis serve --root-namespace`), for its identity.
    #[arg(long, default_value = "trellis-system")]
    pub root_namespace: String,
    /// Where the proxy sends stats and spans (`trellis serve --telemetry-address`), HOST:PORT
    /// (repeated or comma-separated); the xDS addresses when not given.
    #[arg(long, value_delimiter = ',')]
    pub telemetry_address: Vec<String>,
}

/// The `lb_endpoints` of a cluster to `addresses` (a flag's HOST:PORT values), and whether
/// every host is an IP address.
fn lb_endpoints(flag: &str, addresses: &[String]) -> anyhow::Result<(String, bool)> {
    let mut endpoints = String::new();
    let mut all_ips = true;
    for address in addresses {
        let (host, port) = address
            .rsplit_once(':')
            .with_context(|| format!("--{flag} must be HOST:PORT, got {address:?}"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['"', '\\', '\n', ' ']) {
            bail!("--{flag} {address:?}: not a host name or address");
        }
        let port: u16 = port
            .parse()
            .with_context(|| format!("--{flag} port {port:?} is not a port number"))?;
        all_ips &= host.parse::<IpAddr>().is_ok();
        endpoints.push_str(&format!(
            r#"        - endpoint:
            address:
              socket_address:
                address: "{host}"
                port_value: {port}
"#
        ));
    }
    Ok((endpoints, all_ips))
}

/// The cluster of Envoy's own admin interface, for the sidecar's static listeners.
fn admin_cluster(admin_port: u16) -> String {
    format!(
        r#"  - name: trellis-admin
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: trellis-admin
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }}
"#
    )
}

/// The sidecar's static listeners: readiness on 15021 and Prometheus stats on 15090, both
/// answered from Envoy's admin interface (which stays on loopback).
fn sidecar_listeners() -> String {
    let listener = |name: &str, port: u16, path: &str, rewrite: &str| {
        format!(
            r#"  - name: {name}
    address:
      socket_address: {{ address: 0.0.0.0, port_value: {port} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: {name}
              domains: ["*"]
              routes:
              - match: {{ path: "{path}" }}
                route: {{ cluster: trellis-admin, prefix_rewrite: "{rewrite}" }}
"#
        )
    };
    format!(
        "  listeners:\n{}{}",
        listener(
            "readiness",
            trellis_capture::READINESS_PORT,
            "/healthz/ready",
            "/ready"
        ),
        listener(
            "prometheus",
            trellis_capture::STATS_PORT,
            "/stats/prometheus",
            "/stats/prometheus"
        ),
    )
}

/// Prints the bootstrap.
pub fn run(args: &BootstrapArgs) -> anyhow::Result<()> {
    print!("{}", render(args)?);
    Ok(())
}

/// Renders the bootstrap YAML.
pub fn render(args: &BootstrapArgs) -> anyhow::Result<String> {
    let (sidecar, namespace, name) = match (&args.gateway, &args.pod) {
        (Some(g), None) => {
            let key = crate::render::object_key(g, "--gateway")?;
            (false, key.namespace, key.name)
        }
        (None, Some(p)) => {
            let key = crate::render::object_key(p, "--pod")?;
            (true, key.namespace, key.name)
        }
        _ => bail!("give exactly one of --gateway and --pod"),
    };
    if args.xds_address.is_empty() {
        bail!("--xds-address must name at least one HOST:PORT");
    }
    let (endpoints, all_ips) = lb_endpoints("xds-address", &args.xds_address)?;
    let discovery = if all_ips { "STATIC" } else { "STRICT_DNS" };
    let (telemetry_endpoints, telemetry_ips) = if args.telemetry_address.is_empty() {
        (endpoints.clone(), all_ips)
    } else {
        lb_endpoints("telemetry-address", &args.telemetry_address)?
    };
    let telemetry_discovery = if telemetry_ips {
        "STATIC"
    } else {
        "STRICT_DNS"
    };
    let node_id = match &args.node_id {
        Some(id) => id.clone(),
        None if sidecar => format!("{name}.{namespace}"),
        None => {
            let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "proxy".to_string());
            format!("{namespace}.{name}.{hostname}")
        }
    };
    let api_type = if args.delta { "DELTA_GRPC" } else { "GRPC" };
    // Labels for the policy filter's counters in /stats/prometheus.
    let mut stats_tags = String::new();
    for (tag, regex) in trellis_policy::metrics::STATS_TAGS {
        stats_tags.push_str(&format!("  - tag_name: {tag}\n    regex: '{regex}'\n"));
    }
    let admin_port = args.admin_port.unwrap_or(if sidecar {
        trellis_capture::ADMIN_PORT
    } else {
        19000
    });
    let (what, metadata_key, listeners, admin) = if sidecar {
        (
            "sidecar",
            POD_METADATA_KEY,
            sidecar_listeners(),
            admin_cluster(admin_port),
        )
    } else {
        (
            "gateway proxy",
            GATEWAY_METADATA_KEY,
            String::new(),
            String::new(),
        )
    };
    let sds = match &args.sds_socket {
        Some(path) => {
            let path = path.display().to_string();
            if path.contains(['"', '\\', '\n']) {
                bail!("--sds-socket {path:?}: quotes, backslashes and newlines are not allowed");
            }
            sds_cluster(&path)
        }
        None => String::new(),
    };
    let xds_tls = match (&args.sds_socket, args.insecure_xds) {
        (Some(_), false) => {
            let (identity, dns) =
                crate::serve::control_plane_identity(&args.trust_domain, &args.root_namespace);
            for text in [&identity, &dns] {
                if text.contains(['"', '\\', '\n']) {
                    bail!(
                        "--trust-domain and --root-namespace: quotes, backslashes and newlines are not allowed"
                    );
                }
            }
            xds_transport_socket(&identity, &dns)
        }
        _ => String::new(),
    };
    Ok(format!(
        r#"# Envoy bootstrap for a Trellis {what} (generated by `trellis bootstrap`).
node:
  id: "{node_id}"
  cluster: "{namespace}/{name}"
  metadata:
    {metadata_key}: "{namespace}/{name}"
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services:
    - envoy_grpc:
        cluster_name: trellis-xds
        retry_policy:
          retry_back_off:
            base_interval: 0.1s
            max_interval: 0.5s
  cds_config:
    ads: {{}}
    resource_api_version: V3
  lds_config:
    ads: {{}}
    resource_api_version: V3
# Stats for the control plane's health scores: counters and histograms as deltas every 10 s,
# to the control plane's OTLP receiver (the same mutual TLS as xDS), by Envoy's OpenTelemetry
# sink. TracingPolicies send spans there too.
stats_flush_interval: 10s
stats_sinks:
- name: envoy.stat_sinks.open_telemetry
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig
    grpc_service:
      envoy_grpc:
        cluster_name: trellis-telemetry
    report_counters_as_deltas: true
    report_histograms_as_deltas: true
    emit_tags_as_attributes: true
    use_tag_extracted_name: true
# A cluster's traffic stats are created when it first carries traffic, not when it arrives:
# Envoy applies a thousand new clusters about three times faster.
deferred_stat_options:
  enable_deferred_creation_stats: true
static_resources:
{listeners}  clusters:
{admin}{sds}  - name: trellis-xds
    type: {discovery}
    connect_timeout: 1s
    load_assignment:
      cluster_name: trellis-xds
      endpoints:
      - lb_endpoints:
{endpoints}{xds_tls}    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options:
            connection_keepalive:
              interval: 10s
              timeout: 5s
  - name: trellis-telemetry
    type: {telemetry_discovery}
    connect_timeout: 1s
    load_assignment:
      cluster_name: trellis-telemetry
      endpoints:
      - lb_endpoints:
{telemetry_endpoints}{xds_tls}    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
stats_config:
  # Upstream request time in the health scores' buckets (trellis_health::BUCKET_BOUNDS_MS).
  histogram_bucket_settings:
  - match:
      suffix: upstream_rq_time
    buckets: [{latency_buckets}]
  stats_tags:
{stats_tags}# RE2's default program-size limit (100) refuses common patterns, such as a UUID in a path.
# The control plane bounds every expression it sends itself (docs/security.md), far below this.
layered_runtime:
  layers:
  - name: trellis
    static_layer:
      {re2_key}: {re2_limit}
# At most this many downstream connections across all listeners; past it, new ones are refused.
overload_manager:
  resource_monitors:
  - name: envoy.resource_monitors.global_downstream_max_connections
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
      max_active_downstream_connections: 50000
admin:
  address:
    socket_address:
      address: "{admin_address}"
      port_value: {admin_port}
"#,
        admin_address = args.admin_address,
        latency_buckets = trellis_health::BUCKET_BOUNDS_MS
            .iter()
            .map(f64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        re2_key = trellis_translate::re2::ENVOY_PROGRAM_SIZE_KEY,
        re2_limit = trellis_translate::re2::ENVOY_PROGRAM_SIZE_LIMIT,
    ))
}

/// Mutual TLS to the control plane: the workload certificate from the agent, and the control
/// plane's certificate verified against the mesh's root and its SPIFFE ID.
fn xds_transport_socket(identity: &str, dns: &str) -> String {
    // An SDS reference to the agent, indented under a list item or a key.
    let sds = |name: &str, indent: &str| {
        format!(
            "name: {name}\n\
             {indent}sds_config:\n\
             {indent}  resource_api_version: V3\n\
             {indent}  api_config_source:\n\
             {indent}    api_type: GRPC\n\
             {indent}    transport_api_version: V3\n\
             {indent}    set_node_on_first_message_only: true\n\
             {indent}    grpc_services:\n\
             {indent}    - envoy_grpc:\n\
             {indent}        cluster_name: trellis-sds\n"
        )
    };
    format!(
        r#"    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: "{dns}"
        common_tls_context:
          alpn_protocols: [h2]
          tls_params:
            tls_minimum_protocol_version: TLSv1_3
            tls_maximum_protocol_version: TLSv1_3
          tls_certificate_sds_secret_configs:
          - {default}          combined_validation_context:
            default_validation_context:
              match_typed_subject_alt_names:
              - san_type: URI
                matcher:
                  exact: "{identity}"
            validation_context_sds_secret_config:
              {root}"#,
        default = sds("default", "            "),
        root = sds("ROOTCA", "              "),
    )
}

/// The static cluster of the agent's SDS socket (gRPC over a Unix socket).
fn sds_cluster(path: &str) -> String {
    format!(
        r#"  - name: trellis-sds
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: trellis-sds
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              pipe:
                path: "{path}"
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(gateway: &str, xds: &str) -> BootstrapArgs {
        BootstrapArgs {
            gateway: Some(gateway.into()),
            pod: None,
            xds_address: vec![xds.into()],
            delta: false,
            node_id: Some("n1".into()),
            admin_address: "127.0.0.1".into(),
            admin_port: Some(0),
            sds_socket: None,
            insecure_xds: false,
            trust_domain: "cluster.local".into(),
            root_namespace: "trellis-system".into(),
            telemetry_address: Vec::new(),
        }
    }

    #[test]
    fn a_bootstrap_with_the_agents_socket_defines_the_sds_cluster() {
        let yaml = render(&BootstrapArgs {
            gateway: None,
            pod: Some("shop/web-1".into()),
            sds_socket: Some("/var/run/trellis/sds.sock".into()),
            ..args("unused/x", "10.244.0.1:18000")
        })
        .unwrap();
        assert!(yaml.contains("name: trellis-sds"), "{yaml}");
        assert!(yaml.contains("path: \"/var/run/trellis/sds.sock\""));
        // xDS takes mutual TLS with the agent's certificate, verifying the control plane.
        assert!(
            yaml.contains("sni: \"trellis.trellis-system.svc\""),
            "{yaml}"
        );
        assert!(yaml.contains("exact: \"spiffe://cluster.local/ns/trellis-system/sa/trellis\""));
        let plain = render(&BootstrapArgs {
            gateway: None,
            pod: Some("shop/web-1".into()),
            sds_socket: Some("/var/run/trellis/sds.sock".into()),
            insecure_xds: true,
            ..args("unused/x", "10.244.0.1:18000")
        })
        .unwrap();
        assert!(!plain.contains("transport_socket"), "{plain}");
        let bad = render(&BootstrapArgs {
            sds_socket: Some("/tmp/x\"\nadmin:".into()),
            ..args("apps/web", "127.0.0.1:18000")
        });
        assert!(bad.is_err());
    }

    #[test]
    fn a_sidecar_bootstrap_names_its_pod_and_answers_readiness_and_stats() {
        let yaml = render(&BootstrapArgs {
            gateway: None,
            pod: Some("shop/web-1".into()),
            node_id: None,
            admin_port: None,
            ..args("unused/x", "10.244.0.1:18000")
        })
        .unwrap();
        assert!(yaml.contains("trellis.dev/pod: \"shop/web-1\""), "{yaml}");
        assert!(yaml.contains("id: \"web-1.shop\""));
        assert!(yaml.contains("port_value: 15021") && yaml.contains("port_value: 15090"));
        assert!(yaml.contains("port_value: 15000"), "admin");
        assert!(!yaml.contains("trellis.dev/gateway"));
        let e = render(&BootstrapArgs {
            gateway: None,
            pod: Some("web-1".into()),
            ..args("unused/x", "10.244.0.1:18000")
        })
        .unwrap_err();
        assert!(e.to_string().contains("--pod must be NAMESPACE/NAME"));
    }

    #[test]
    fn bootstrap_names_the_gateway_and_the_control_plane() {
        let yaml = render(&args("apps/web", "127.0.0.1:18000")).unwrap();
        assert!(yaml.contains("trellis.dev/gateway: \"apps/web\""));
        assert!(yaml.contains("api_type: GRPC"));
        assert!(yaml.contains("type: STATIC"));
        assert!(yaml.contains("port_value: 18000"));
        assert!(yaml.contains("re2.max_program_size.error_level: 100000"));
        // Labels for the policy filter's counters.
        for (tag, regex) in trellis_policy::metrics::STATS_TAGS {
            assert!(yaml.contains(&format!("tag_name: {tag}\n    regex: '{regex}'")));
        }
        let delta = render(&BootstrapArgs {
            delta: true,
            ..args("apps/web", "trellis.trellis-system:18000")
        })
        .unwrap();
        assert!(delta.contains("api_type: DELTA_GRPC"));
        assert!(delta.contains("type: STRICT_DNS"));
    }

    #[test]
    fn malformed_arguments_are_explained() {
        let e = render(&args("web", "127.0.0.1:18000")).unwrap_err();
        assert!(e.to_string().contains("NAMESPACE/NAME"));
        let e = render(&args("a/b", "127.0.0.1")).unwrap_err();
        assert!(e.to_string().contains("HOST:PORT"));
    }

    #[test]
    fn several_xds_addresses_become_endpoints_of_one_cluster() {
        let yaml = render(&BootstrapArgs {
            xds_address: vec!["127.0.0.1:18000".into(), "127.0.0.2:18001".into()],
            ..args("apps/web", "unused:1")
        })
        .unwrap();
        // The xDS cluster's two, and the same two for telemetry.
        assert_eq!(yaml.matches("- endpoint:").count(), 4);
        assert!(yaml.contains("port_value: 18001"));
        assert!(yaml.contains("type: STATIC"));
    }

    #[test]
    fn stats_and_spans_go_to_the_telemetry_address() {
        let yaml = render(&BootstrapArgs {
            telemetry_address: vec!["trellis.trellis-system:4317".into()],
            ..args("apps/web", "127.0.0.1:18000")
        })
        .unwrap();
        let doc: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        let clusters = doc["static_resources"]["clusters"].as_array().unwrap();
        let telemetry = clusters
            .iter()
            .find(|c| c["name"] == "trellis-telemetry")
            .unwrap();
        assert_eq!(telemetry["type"], "STRICT_DNS");
        assert!(telemetry.to_string().contains("trellis.trellis-system"));
        assert_eq!(
            doc["stats_sinks"][0]["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"],
            "trellis-telemetry"
        );
        let e = render(&BootstrapArgs {
            telemetry_address: vec!["bad host:1".into()],
            ..args("apps/web", "127.0.0.1:18000")
        })
        .unwrap_err();
        assert!(e.to_string().contains("--telemetry-address"), "{e}");
    }
}
