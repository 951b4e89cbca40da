//! A pod's volumes, set up on the host as the kubelet's volume plugins would, one directory each:
//! `emptyDir` (empty, per pod; `sizeLimit` is not enforced), `hostPath`, `secret`, `configMap`,
//! `downwardAPI` and `projected` — including the `kube-api-access-*` volume the ServiceAccount
//! admission plugin injects, with a token from the TokenRequest API bound to the pod.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Component, Path, PathBuf},
};

use k8s_openapi::{
    ByteString,
    api::{
        authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
        core::v1::{
            DownwardAPIVolumeFile, KeyToPath, Pod, ServiceAccount, ServiceAccountTokenProjection,
        },
    },
};
use kube::{Api, Client, api::PostParams};

use super::env::{Sources, field_value};

/// The ConfigMap kube-controller-manager's root-CA publisher writes into every namespace; the
/// projected ServiceAccount volume takes `ca.crt` from it.
const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
const DEFAULT_MODE: i32 = 0o644;

/// A volume ready to be bind-mounted.
#[derive(Clone, Debug)]
pub(super) struct Volume {
    pub path: PathBuf,
    /// Secret, ConfigMap, downward API and projected volumes are always mounted read-only.
    pub read_only: bool,
}

/// What volume set-up needs from the runner.
pub(super) struct Context<'a> {
    pub client: &'a Client,
    /// The cluster's CA certificate (PEM), for `ca.crt` where no root-CA ConfigMap is published.
    pub ca_pem: &'a str,
    /// Where this pod's volume directories go.
    pub dir: &'a Path,
}

/// Sets up every volume of the pod. An error says which volume failed and why (the kubelet's
/// `FailedMount`); the caller retries.
pub(super) async fn prepare(
    context: &Context<'_>,
    pod: &Pod,
) -> Result<BTreeMap<String, Volume>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut sources = Sources::new(context.client.clone(), namespace);
    let mut volumes = BTreeMap::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = context.dir.join(&volume.name);
        let failed =
            |e: String| format!("MountVolume.SetUp failed for volume {:?}: {e}", volume.name);
        let prepared = if volume.empty_dir.is_some() {
            fs::create_dir_all(&dir).map_err(|e| failed(e.to_string()))?;
            // Like the kubelet's emptyDir: writable by whatever user the container runs as.
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))
                .map_err(|e| failed(e.to_string()))?;
            Volume {
                path: dir,
                read_only: false,
            }
        } else if let Some(host) = &volume.host_path {
            let path = PathBuf::from(&host.path);
            if host.type_.as_deref() == Some("DirectoryOrCreate") {
                fs::create_dir_all(&path).map_err(|e| failed(e.to_string()))?;
            }
            Volume {
                path,
                read_only: false,
            }
        } else {
            let files = files(context, &mut sources, pod, volume)
                .await
                .map_err(failed)?;
            write_files(&dir, &files).map_err(failed)?;
            Volume {
                path: dir,
                read_only: true,
            }
        };
        volumes.insert(volume.name.clone(), prepared);
    }
    Ok(volumes)
}

/// A file of a volume: path inside the volume, content, mode.
type VolumeFile = (String, Vec<u8>, i32);

/// The files of a Secret, ConfigMap, downward API or projected volume.
async fn files(
    context: &Context<'_>,
    sources: &mut Sources,
    pod: &Pod,
    volume: &k8s_openapi::api::core::v1::Volume,
) -> Result<Vec<VolumeFile>, String> {
    if let Some(secret) = &volume.secret {
        let name = secret.secret_name.as_deref().unwrap_or_default();
        let mode = secret.default_mode.unwrap_or(DEFAULT_MODE);
        let data = sources.secret(name).await?;
        return key_files(
            "secret",
            name,
            data,
            secret.items.as_deref(),
            secret.optional,
            mode,
        );
    }
    if let Some(config_map) = &volume.config_map {
        let name = &config_map.name;
        let mode = config_map.default_mode.unwrap_or(DEFAULT_MODE);
        let data = sources.config_map(name).await?;
        let items = config_map.items.as_deref();
        return key_files("configmap", name, data, items, config_map.optional, mode);
    }
    if let Some(downward) = &volume.downward_api {
        let mode = downward.default_mode.unwrap_or(DEFAULT_MODE);
        return downward_files(pod, downward.items.iter().flatten(), mode);
    }
    let Some(projected) = &volume.projected else {
        return Err(
            "only emptyDir, hostPath, secret, configMap, downwardAPI and projected volumes \
                    are supported by the pod runner"
                .into(),
        );
    };
    let mode = projected.default_mode.unwrap_or(DEFAULT_MODE);
    let mut files = Vec::new();
    for source in projected.sources.iter().flatten() {
        if let Some(token) = &source.service_account_token {
            files.push((
                token.path.clone(),
                bound_token(context.client, pod, token).await?,
                mode,
            ));
        } else if let Some(secret) = &source.secret {
            let data = sources.secret(&secret.name).await?;
            let items = secret.items.as_deref();
            files.extend(key_files(
                "secret",
                &secret.name,
                data,
                items,
                secret.optional,
                mode,
            )?);
        } else if let Some(config_map) = &source.config_map {
            let mut data = sources.config_map(&config_map.name).await?;
            if data.is_none() && config_map.name == ROOT_CA_CONFIG_MAP {
                // No root-CA publisher runs: use the CA the runner knows, which is the same.
                let ca = ByteString(context.ca_pem.as_bytes().to_vec());
                data = Some([("ca.crt".to_string(), ca)].into());
            }
            let items = config_map.items.as_deref();
            let name = &config_map.name;
            files.extend(key_files(
                "configmap",
                name,
                data,
                items,
                config_map.optional,
                mode,
            )?);
        } else if let Some(downward) = &source.downward_api {
            files.extend(downward_files(pod, downward.items.iter().flatten(), mode)?);
        } else {
            return Err(
                "projected volume: only serviceAccountToken, secret, configMap and \
                        downwardAPI sources are supported by the pod runner"
                    .into(),
            );
        }
    }
    Ok(files)
}

/// The files of a Secret or ConfigMap: all keys, or the listed `items`.
fn key_files(
    kind: &str,
    name: &str,
    data: Option<BTreeMap<String, ByteString>>,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    default_mode: i32,
) -> Result<Vec<VolumeFile>, String> {
    let optional = optional == Some(true);
    let Some(data) = data else {
        return if optional {
            Ok(Vec::new())
        } else {
            Err(format!("{kind} \"{name}\" not found"))
        };
    };
    let Some(items) = items else {
        return Ok(data
            .into_iter()
            .map(|(key, value)| (key, value.0, default_mode))
            .collect());
    };
    let mut files = Vec::new();
    for item in items {
        match data.get(&item.key) {
            Some(value) => files.push((
                item.path.clone(),
                value.0.clone(),
                item.mode.unwrap_or(default_mode),
            )),
            None if optional => {}
            None => {
                return Err(format!(
                    "{kind} references non-existent config key: {}",
                    item.key
                ));
            }
        }
    }
    Ok(files)
}

fn downward_files<'a>(
    pod: &Pod,
    items: impl Iterator<Item = &'a DownwardAPIVolumeFile>,
    default_mode: i32,
) -> Result<Vec<VolumeFile>, String> {
    items
        .map(|item| {
            let field = item.field_ref.as_ref().ok_or_else(|| {
                format!(
                    "{}: only fieldRef is supported by the pod runner",
                    item.path
                )
            })?;
            let value = field_value(pod, &field.field_path)?;
            Ok((
                item.path.clone(),
                value.into_bytes(),
                item.mode.unwrap_or(default_mode),
            ))
        })
        .collect()
}

/// A ServiceAccount token bound to the pod, from the TokenRequest API, as the kubelet's token
/// manager requests it.
async fn bound_token(
    client: &Client,
    pod: &Pod,
    projection: &ServiceAccountTokenProjection,
) -> Result<Vec<u8>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let service_account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .unwrap_or("default");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: projection.audience.iter().cloned().collect(),
            expiration_seconds: Some(projection.expiration_seconds.unwrap_or(3600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let response = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(service_account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("failed to fetch token for serviceaccount {service_account}: {e}"))?;
    let status = response
        .status
        .ok_or("the TokenRequest returned no token")?;
    Ok(status.token.into_bytes())
}

fn write_files(dir: &Path, files: &[VolumeFile]) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for (relative, content, mode) in files {
        // The API server validates paths; refuse anything that would leave the volume anyway.
        let relative = Path::new(relative);
        if !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(format!("invalid path {}", relative.display()));
        }
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        fs::write(&path, content).map_err(|e| e.to_string())?;
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode as u32))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
