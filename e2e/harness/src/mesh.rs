//! Mesh pods on [`crate::netns`]: an echo app as an ordinary uid, and (when the pod is in the
//! mesh) the capture rules and an Envoy sidecar as uid 1337, bootstrapped by
//! `trellis bootstrap --pod` against a control plane on the network's bridge.
//!
//! The test writes the pod's `v1` Pod object (with its IP) into the config directory, as a
//! cluster would ([`MeshPod::pod_yaml`]).

use crate::netns::{Netns, Network, envoy_executable};
use crate::{
    ControlPlane, Process, Reply, echo_bin, http_get_text, request, trellis_bin, wait_for,
};
use anyhow::{Context, anyhow};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// The uid the app runs as (anything but the proxy's).
pub const APP_UID: u32 = 1000;
/// The proxy's uid (and gid), which the capture rules leave alone.
pub const PROXY_UID: u32 = 1337;
/// The port the echo app listens on in every pod.
pub const APP_PORT: u16 = 8080;

/// What runs in a pod.
#[derive(Clone, Debug)]
pub struct PodSpec<'a> {
    /// Kubernetes namespace.
    pub namespace: &'a str,
    /// Pod name.
    pub name: &'a str,
    /// Labels (`app`, `version`, ...).
    pub labels: &'a [(&'a str, &'a str)],
    /// Whether the pod gets the capture rules and a sidecar.
    pub sidecar: bool,
    /// Its address; the network's next one when `None`.
    pub ip: Option<Ipv4Addr>,
    /// More environment for its echo app (`CALL_URL`, `FORWARD_TRACE_CONTEXT`, ...).
    pub app_env: &'a [(&'a str, &'a str)],
}

/// A pod's workload identity: its sidecar runs beside `trellis agent`, which obtains the
/// pod's certificate with a `trellis token` and serves it to Envoy over SDS.
#[derive(Clone, Debug)]
pub struct Workload<'a> {
    /// The pod's service account.
    pub service_account: &'a str,
    /// The control plane's config directory: the Pod object is written there before its token
    /// is issued.
    pub config_dir: &'a Path,
    /// The control plane's CA directory (`trellis serve --ca-dir`).
    pub ca_dir: &'a Path,
    /// The certificate lifetime the agent asks for, in seconds.
    pub lifetime_secs: u64,
    /// Whether to write the Pod object (else it is in the config directory already).
    pub write_pod: bool,
}

/// A running pod.
#[derive(Debug)]
pub struct MeshPod {
    /// Its Kubernetes namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    labels: Vec<(String, String)>,
    /// Whether it has a sidecar.
    pub sidecar: bool,
    service_account: Option<String>,
    // Processes stop before the namespace goes.
    envoy: Option<Process>,
    /// Whether `envoy` is `trellis agent`, which started Envoy.
    agent_runs_envoy: bool,
    _app: Process,
    /// Its network namespace (and IP).
    pub netns: Netns,
}

impl MeshPod {
    /// Starts the pod: its namespace, the echo app on [`APP_PORT`], and with a sidecar the
    /// capture rules and Envoy (which then waits for its configuration from `xds`).
    pub fn start(
        net: &Network,
        work: &Path,
        spec: &PodSpec<'_>,
        xds: SocketAddr,
    ) -> anyhow::Result<MeshPod> {
        Self::start_with(net, work, spec, xds, None)
    }

    /// [`MeshPod::start`], and with a `workload` identity: the Pod object is written to the
    /// config directory, a token issued for it, and `trellis agent` started beside the sidecar
    /// (both as the proxy's uid), which loads its certificate from the agent.
    pub fn start_with(
        net: &Network,
        work: &Path,
        spec: &PodSpec<'_>,
        xds: SocketAddr,
        workload: Option<&Workload<'_>>,
    ) -> anyhow::Result<MeshPod> {
        let name = format!("{}-{}", spec.namespace, spec.name);
        let netns = match spec.ip {
            Some(ip) => net.pod_at(&name, ip)?,
            None => net.pod(&name)?,
        };
        let log = work.join(format!("app-{}-{}.log", spec.namespace, spec.name));
        let mut cmd = netns.command(Some(APP_UID), &echo_bin()?);
        cmd.arg("--address")
            .arg("0.0.0.0")
            .env("HTTP_PORT", APP_PORT.to_string())
            .env("H2C_PORT", "0")
            .env("POD_NAME", spec.name)
            .env("NAMESPACE", spec.namespace)
            .envs(spec.app_env.iter().copied());
        let app = Process::spawn(cmd, &log)?;
        let mut pod = MeshPod {
            namespace: spec.namespace.to_string(),
            name: spec.name.to_string(),
            labels: spec
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            sidecar: spec.sidecar,
            service_account: workload
                .map(|w| w.service_account.to_string())
                .filter(|sa| !sa.is_empty()),
            envoy: None,
            agent_runs_envoy: false,
            _app: app,
            netns,
        };
        if !spec.sidecar {
            return Ok(pod);
        }
        let trellis = trellis_bin()?;
        pod.netns.capture(&trellis, &[])?;
        let identity = match workload {
            Some(w) => Some(pod.prepare_identity(work, w)?),
            None => None,
        };
        let mut bootstrap = std::process::Command::new(&trellis);
        bootstrap
            .arg("bootstrap")
            .arg("--pod")
            .arg(format!("{}/{}", spec.namespace, spec.name))
            .arg("--xds-address")
            .arg(xds.to_string());
        if let Some(id) = &identity {
            bootstrap.arg("--sds-socket").arg(&id.socket);
        }
        let out = bootstrap.output().context("running trellis bootstrap")?;
        anyhow::ensure!(
            out.status.success(),
            "trellis bootstrap failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = work.join(format!("sidecar-{}-{}.log", spec.namespace, spec.name));
        let envoy_args = ["--disable-hot-restart", "--concurrency", "1", "-l", "warn"];
        match (&identity, workload) {
            (Some(id), Some(w)) => {
                // As in an injected pod: the agent starts Envoy once it holds the certificate.
                use std::os::unix::fs::{PermissionsExt, chown};
                let path = id.dir.join("envoy.yaml");
                std::fs::write(&path, &out.stdout)?;
                chown(&path, Some(PROXY_UID), Some(PROXY_UID))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
                let mut cmd = pod.agent_command(id, w, xds)?;
                cmd.arg("--envoy")
                    .arg(envoy_executable()?)
                    .arg("--bootstrap")
                    .arg(&path)
                    .arg("--readiness-address")
                    .arg(format!("127.0.0.1:{AGENT_READINESS_PORT}"));
                for a in envoy_args {
                    cmd.arg(format!("--envoy-arg={a}"));
                }
                pod.envoy = Some(Process::spawn(cmd, &log)?);
                pod.agent_runs_envoy = true;
            }
            _ => {
                let bootstrap = String::from_utf8(out.stdout)?;
                let mut cmd = pod.netns.command(Some(PROXY_UID), &envoy_executable()?);
                cmd.arg("--config-yaml").arg(bootstrap).args(envoy_args);
                pod.envoy = Some(Process::spawn(cmd, &log)?);
            }
        }
        Ok(pod)
    }

    /// Writes the Pod object, issues its token and lays out the pod's identity directory (the
    /// token and the mesh's root), owned by the proxy's uid.
    fn prepare_identity(&self, work: &Path, w: &Workload<'_>) -> anyhow::Result<Identity> {
        use std::os::unix::fs::{PermissionsExt, chown};
        if w.write_pod {
            std::fs::write(
                w.config_dir
                    .join(format!("pod-{}-{}.yaml", self.namespace, self.name)),
                self.pod_yaml(),
            )?;
        }
        let out = std::process::Command::new(trellis_bin()?)
            .arg("token")
            .arg("--pod")
            .arg(format!("{}/{}", self.namespace, self.name))
            .arg("--config-dir")
            .arg(w.config_dir)
            .arg("--ca-dir")
            .arg(w.ca_dir)
            .output()
            .context("running trellis token")?;
        anyhow::ensure!(
            out.status.success(),
            "trellis token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The proxy's uid reaches its own directory (and nothing else of the work directory).
        std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o711))?;
        let dir = work.join(format!("identity-{}-{}", self.namespace, self.name));
        std::fs::create_dir_all(&dir)?;
        chown(&dir, Some(PROXY_UID), Some(PROXY_UID))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let token = dir.join("token");
        std::fs::write(&token, &out.stdout)?;
        chown(&token, Some(PROXY_UID), Some(PROXY_UID))?;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))?;
        // The mesh's root, to verify the control plane by (the CA directory is root's alone).
        let root = dir.join("root-cert.pem");
        std::fs::copy(w.ca_dir.join("root-cert.pem"), &root)?;
        chown(&root, Some(PROXY_UID), Some(PROXY_UID))?;
        Ok(Identity {
            socket: dir.join("sds.sock"),
            token,
            root,
            dir,
        })
    }

    /// `trellis agent` in the pod as the proxy's uid, for the identity in `id`.
    fn agent_command(
        &self,
        id: &Identity,
        w: &Workload<'_>,
        xds: SocketAddr,
    ) -> anyhow::Result<std::process::Command> {
        let mut cmd = self.netns.command(Some(PROXY_UID), &trellis_bin()?);
        cmd.arg("agent")
            .arg("--ca-address")
            .arg(xds.to_string())
            .arg("--token-file")
            .arg(&id.token)
            .arg("--sds-socket")
            .arg(&id.socket)
            .arg("--lifetime-secs")
            .arg(w.lifetime_secs.to_string())
            .arg("--root-cert")
            .arg(&id.root);
        Ok(cmd)
    }

    /// Changes the service account [`MeshPod::pod_yaml`] writes (the certificate the agent
    /// holds keeps the identity it was issued for).
    pub fn set_service_account(&mut self, service_account: &str) {
        self.service_account = Some(service_account.to_string());
    }

    /// The agent's log so far (with Envoy's: the agent starts it).
    pub fn agent_log(&self) -> String {
        match self.agent_runs_envoy {
            true => self.sidecar_log(),
            false => String::new(),
        }
    }

    /// `GET /ready` of the pod's agent: `(status, body)`.
    pub fn agent_readiness(&self) -> anyhow::Result<(u16, String)> {
        let reply = self.netns.run(|| {
            request(
                SocketAddr::from((Ipv4Addr::LOCALHOST, AGENT_READINESS_PORT)),
                "GET",
                "localhost",
                "/ready",
                &[],
            )
        })??;
        Ok((reply.status, reply.body))
    }

    /// Whether the pod carries every label of `selector`.
    pub fn has_labels(&self, selector: &[(&str, &str)]) -> bool {
        selector
            .iter()
            .all(|(k, v)| self.labels.iter().any(|(lk, lv)| lk == k && lv == v))
    }

    /// The sidecar's process id (Envoy itself: `ip netns exec` and `setpriv` exec it; where
    /// the agent started it, the agent's child).
    pub fn sidecar_pid(&self) -> Option<u32> {
        let pid = self.envoy.as_ref().and_then(Process::id)?;
        if !self.agent_runs_envoy {
            return Some(pid);
        }
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|c| {
                c.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .next()
    }

    /// The pod's IP.
    pub fn ip(&self) -> Ipv4Addr {
        self.netns.ip
    }

    /// The `v1` Pod object a cluster would hold for this pod (ready, with its IP).
    pub fn pod_yaml(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}: \"{v}\""))
            .collect();
        let account = self
            .service_account
            .as_deref()
            .map(|sa| format!("\n  serviceAccountName: {sa}"))
            .unwrap_or_default();
        let annotations = if self.sidecar {
            String::new()
        } else {
            "\n  annotations: {trellis.dev/sidecar: \"false\"}".to_string()
        };
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {}\n  labels: {{{}}}{annotations}\nspec:{account}\n  containers: [{{name: app, ports: [{{name: http, containerPort: {APP_PORT}}}]}}]\nstatus:\n  podIP: {}\n  conditions: [{{type: Ready, status: \"True\"}}]\n",
            self.name,
            self.namespace,
            labels.join(", "),
            self.ip()
        )
    }

    /// A request from inside the pod (captured like the app's own).
    pub fn request(
        &self,
        to: SocketAddr,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Reply> {
        let host = host.to_string();
        let path = path.to_string();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.netns.run(move || {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            request(to, "GET", &host, &path, &headers)
        })?
    }

    /// A stat of the sidecar's Envoy (read from its admin port inside the pod).
    pub fn sidecar_stat(&self, name: &str) -> anyhow::Result<u64> {
        let text = self.admin("/stats")?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0))
    }

    /// Waits until the sidecar has no listener or cluster warming: the control plane counts a
    /// listener update as synced once it is ACKed, while Envoy still waits for the new
    /// listeners' routes before it hands them connections.
    pub fn wait_settled(&self) -> anyhow::Result<()> {
        wait_for(
            "the sidecar's listeners and clusters to warm",
            Duration::from_secs(30),
            || {
                let warming = self
                    .sidecar_stat("listener_manager.total_listeners_warming")
                    .ok()?
                    + self.sidecar_stat("cluster_manager.warming_clusters").ok()?;
                (warming == 0).then_some(())
            },
        )
    }

    /// `GET path` on the sidecar's admin interface.
    pub fn admin(&self, path: &str) -> anyhow::Result<String> {
        let path = path.to_string();
        self.netns.run(move || {
            http_get_text(
                SocketAddr::from((Ipv4Addr::LOCALHOST, trellis_capture_admin())),
                &path,
            )
        })?
    }

    /// Waits until the sidecar answers ready on 15021 (it applied its configuration).
    pub fn wait_sidecar_ready(&mut self) -> anyhow::Result<()> {
        let envoy = self
            .envoy
            .as_mut()
            .ok_or_else(|| anyhow!("{} has no sidecar", self.name))?;
        let netns = &self.netns;
        wait_for("the sidecar to be ready", Duration::from_secs(60), || {
            if !envoy.running() {
                return Some(Err(anyhow!("the sidecar exited:\n{}", envoy.tail(20))));
            }
            let ready = netns
                .run(|| {
                    request(
                        SocketAddr::from((Ipv4Addr::LOCALHOST, 15021)),
                        "GET",
                        "localhost",
                        "/healthz/ready",
                        &[],
                    )
                })
                .ok()?
                .ok()?;
            (ready.status == 200).then_some(Ok(()))
        })?
        .context("sidecar readiness")?;
        if self.agent_runs_envoy {
            // What a pod's startup probe asks: the agent's view (certificate held and taken by
            // Envoy, configuration accepted).
            let mut last = String::new();
            wait_for("the agent to report ready", Duration::from_secs(30), || {
                match self.agent_readiness() {
                    Ok((200, _)) => return Some(()),
                    Ok((status, body)) => last = format!("{status} {body}"),
                    Err(e) => last = format!("{e:#}"),
                }
                None
            })
            .with_context(|| format!("the agent's readiness said: {last}"))?;
        }
        Ok(())
    }

    /// The sidecar's log so far.
    pub fn sidecar_log(&self) -> String {
        self.envoy.as_ref().map(|e| e.tail(40)).unwrap_or_default()
    }
}

/// Where the agent answers `GET /ready` inside a pod (Istio's agent uses 15020 too).
pub const AGENT_READINESS_PORT: u16 = 15020;

/// A pod's identity directory, as the proxy's uid sees it.
struct Identity {
    dir: std::path::PathBuf,
    token: std::path::PathBuf,
    root: std::path::PathBuf,
    socket: std::path::PathBuf,
}

/// The sidecar's admin port.
fn trellis_capture_admin() -> u16 {
    15000
}

/// A `v1` Namespace, labelled into the mesh when `meshed`.
pub fn namespace_yaml(name: &str, meshed: bool) -> String {
    let labels = if meshed {
        "{trellis.dev/mesh: enabled}"
    } else {
        "{}"
    };
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {labels}}}\n---\n")
}

/// A Service (`clusterIP`, one HTTP `port` to the app's [`APP_PORT`]) selecting `selector`, and
/// the EndpointSlice a cluster would derive for it from `endpoints` (pod IP and name).
pub fn service_yaml(
    namespace: &str,
    name: &str,
    cluster_ip: Ipv4Addr,
    port: u16,
    selector: &[(&str, &str)],
    endpoints: &[(Ipv4Addr, &str)],
) -> String {
    let selector: Vec<String> = selector.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|(ip, pod)| {
            format!(
                "- {{addresses: [{ip}], conditions: {{ready: true}}, targetRef: {{kind: Pod, \
                 name: {pod}, namespace: {namespace}}}}}"
            )
        })
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec:\n  clusterIP: {cluster_ip}\n  selector: {{{}}}\n  ports: [{{name: http, port: \
         {port}, targetPort: {APP_PORT}, appProtocol: http}}]\n---\napiVersion: discovery.k8s.io/v1\n\
         kind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: {namespace}, labels: \
         {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: \
         {APP_PORT}}}]\nendpoints:{}\n",
        selector.join(", "),
        if endpoints.is_empty() {
            " []".to_string()
        } else {
            format!("\n{}", endpoints.join("\n"))
        }
    )
}

/// Waits until every pod's sidecar is ready, the control plane reports each one SYNCED with
/// its latest configuration, and none has a listener or cluster warming: the state in which a
/// request through the mesh goes where the configuration says. Call it after writing the
/// objects the pods need.
pub fn wait_sidecars<'a>(
    control_plane: &ControlPlane,
    pods: impl IntoIterator<Item = &'a mut MeshPod>,
) -> anyhow::Result<()> {
    let mut sidecars = Vec::new();
    for pod in pods.into_iter().filter(|p| p.sidecar) {
        pod.wait_sidecar_ready()
            .with_context(|| format!("{}/{}: {}", pod.namespace, pod.name, pod.sidecar_log()))?;
        sidecars.push(&*pod);
    }
    // The last files written reach the control plane after its debounce window.
    std::thread::sleep(Duration::from_millis(300));
    let keys: Vec<String> = sidecars
        .iter()
        .map(|p| format!("pod/{}/{}", p.namespace, p.name))
        .collect();
    control_plane.wait_synced(&keys, Duration::from_secs(30))?;
    for pod in sidecars {
        pod.wait_settled()?;
    }
    Ok(())
}

/// The names a pod of `pod_namespace` resolves Service `namespace/name` by, as its DNS search
/// path would: the short name in its own namespace, then `name.namespace`,
/// `name.namespace.svc` and the full name.
pub fn service_hostnames(namespace: &str, name: &str, pod_namespace: &str) -> Vec<String> {
    let mut names = Vec::new();
    if namespace == pod_namespace {
        names.push(name.to_string());
    }
    names.push(format!("{name}.{namespace}"));
    names.push(format!("{name}.{namespace}.svc"));
    names.push(format!("{name}.{namespace}.svc.cluster.local"));
    names
}
