//! Startup, readiness and liveness probes of one container instance, with the kubelet's timing
//! (`initialDelaySeconds`, `periodSeconds`, `timeoutSeconds`, success and failure thresholds).
//! `httpGet` and `tcpSocket` probes connect from inside the pod's network namespace, to
//! 127.0.0.1 (the pod's own address there) unless they name a host; `exec` probes run in the
//! container's mount and network namespaces through `nsenter`.

use std::{net::SocketAddr, process::Stdio, sync::Arc, time::Duration};

use k8s_openapi::{
    api::core::v1::{ContainerPort, HTTPGetAction, Probe},
    apimachinery::pkg::util::intstr::IntOrString,
};
use tokio::{net::TcpStream, process::Command};

use super::{env::POD_IP, http, network::PodNetwork};

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Startup,
    Readiness,
    Liveness,
}

/// The container instance a probe looks at.
pub(super) struct Target {
    pub pid: u32,
    pub ports: Vec<ContainerPort>,
    pub env: Vec<(String, String)>,
    pub network: Arc<PodNetwork>,
}

/// Probes until the container instance ends (the caller drops or aborts this future), calling
/// `report` each time the result changes once a threshold is reached: `true` healthy, `false`
/// failed. A startup probe stops after its first success. Stops when `report` returns false.
pub(super) async fn run(kind: Kind, probe: Probe, target: Target, report: impl Fn(bool) -> bool) {
    let period = Duration::from_secs(positive(probe.period_seconds, 10));
    let timeout = Duration::from_secs(positive(probe.timeout_seconds, 1));
    let success_threshold = positive(probe.success_threshold, 1);
    let failure_threshold = positive(probe.failure_threshold, 3);
    tokio::time::sleep(Duration::from_secs(
        probe.initial_delay_seconds.unwrap_or(0).max(0) as u64,
    ))
    .await;
    let (mut successes, mut failures, mut reported) = (0, 0, None);
    loop {
        let healthy = tokio::time::timeout(timeout, check(&probe, &target))
            .await
            .unwrap_or(false);
        if healthy {
            successes += 1;
            failures = 0;
        } else {
            failures += 1;
            successes = 0;
        }
        let decided = (healthy && successes >= success_threshold)
            || (!healthy && failures >= failure_threshold);
        if decided && reported != Some(healthy) {
            if !report(healthy) {
                return;
            }
            reported = Some(healthy);
        }
        if kind == Kind::Startup && reported == Some(true) {
            return;
        }
        tokio::time::sleep(period).await;
    }
}

fn positive(value: Option<i32>, default: u64) -> u64 {
    value.map_or(default, |v| v.max(1) as u64)
}

async fn check(probe: &Probe, target: &Target) -> bool {
    if let Some(http) = &probe.http_get {
        let Some(port) = resolve_port(&http.port, &target.ports) else {
            return false;
        };
        return http_get(http, port, &target.network)
            .await
            .is_some_and(|code| (200..400).contains(&code));
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = resolve_port(&tcp.port, &target.ports) else {
            return false;
        };
        let host = tcp.host.as_deref().unwrap_or(POD_IP);
        return connect(host, port, &target.network).await.is_some();
    }
    if let Some(exec) = &probe.exec {
        let status = Command::new("nsenter")
            .arg(format!("--target={}", target.pid))
            .arg("--mount")
            .arg("--net")
            .arg("--")
            .args(exec.command.iter().flatten())
            .env_clear()
            .envs(target.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status()
            .await;
        return status.is_ok_and(|s| s.success());
    }
    eprintln!(
        "pod-runner: only httpGet, tcpSocket and exec probes are supported; failing {probe:?}"
    );
    false
}

/// A probe's port: a number, or the name of one of the container's ports.
fn resolve_port(port: &IntOrString, ports: &[ContainerPort]) -> Option<u16> {
    match port {
        IntOrString::Int(number) => u16::try_from(*number).ok(),
        IntOrString::String(name) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .or_else(|| name.parse().ok()),
    }
}

/// A connection from inside the pod's network to `host` (an address, or a name resolved on the
/// host), as a probe makes it.
async fn connect(host: &str, port: u16, network: &PodNetwork) -> Option<TcpStream> {
    let address: SocketAddr = tokio::net::lookup_host((host, port)).await.ok()?.next()?;
    network.connect(address).await.ok()
}

/// The status code of a plain HTTP GET, as the kubelet's prober sends it.
async fn http_get(action: &HTTPGetAction, port: u16, network: &PodNetwork) -> Option<u16> {
    if action
        .scheme
        .as_deref()
        .is_some_and(|s| !s.eq_ignore_ascii_case("HTTP"))
    {
        eprintln!(
            "pod-runner: only HTTP probes are supported, not {:?}",
            action.scheme
        );
        return None;
    }
    let host = action.host.as_deref().unwrap_or(POD_IP);
    let path = action.path.as_deref().unwrap_or("/");
    let mut headers = vec![("User-Agent", "kube-probe/1.33"), ("Accept", "*/*")];
    for header in action.http_headers.iter().flatten() {
        headers.push((header.name.as_str(), header.value.as_str()));
    }
    let stream = connect(host, port, network).await?;
    let authority = format!("{host}:{port}");
    let response = http::get(stream, &authority, path, &headers).await.ok()?;
    Some(response.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_by_number_or_name() {
        let ports = [ContainerPort {
            name: Some("http".into()),
            container_port: 8080,
            ..Default::default()
        }];
        assert_eq!(resolve_port(&IntOrString::Int(9000), &ports), Some(9000));
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &ports),
            Some(8080)
        );
        assert_eq!(
            resolve_port(&IntOrString::String("metrics".into()), &ports),
            None
        );
    }
}
