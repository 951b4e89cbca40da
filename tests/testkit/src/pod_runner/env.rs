//! A container's environment as the kubelet builds it (`makeEnvironmentVariables`): `envFrom`
//! first, then `env` in order (later entries see earlier ones through `$(VAR)`), then the service
//! variables that are not already set. Also the downward API field values shared with volumes.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Container, Pod, Secret},
};
use kube::{Api, Client};

/// The pod's IP and its host's IP: a pod is at 127.0.0.1 in its own network namespace (see
/// "A pod's network" in the module docs of `pod_runner`), the host at 127.0.0.1 in its own.
pub(super) const POD_IP: &str = "127.0.0.1";

/// Expands `$(VAR)` references like the kubelet (`third_party/forked/golang/expansion`): `$$` is
/// an escaped `$`, an unknown or unterminated reference is kept as written.
pub(super) fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        match after.chars().next() {
            None => {
                out.push('$');
                rest = after;
            }
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after.find(')') {
                Some(close) => {
                    let name = &after[1..close];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            Some(other) => {
                out.push('$');
                out.push(other);
                rest = &after[other.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The value of a downward API `fieldPath` for a pod bound to this runner's node.
pub(super) fn field_value(pod: &Pod, path: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let map_entry = |map: Option<&BTreeMap<String, String>>, key: &str| {
        map.and_then(|m| m.get(key)).cloned().unwrap_or_default()
    };
    let map_text = |map: Option<&BTreeMap<String, String>>| {
        map.into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}\n"))
            .collect::<String>()
    };
    if let Some(key) = subscript(path, "metadata.labels") {
        return Ok(map_entry(meta.labels.as_ref(), key));
    }
    if let Some(key) = subscript(path, "metadata.annotations") {
        return Ok(map_entry(meta.annotations.as_ref(), key));
    }
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_text(meta.labels.as_ref()),
        "metadata.annotations" => map_text(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" | "status.hostIP" | "status.hostIPs" => POD_IP.into(),
        other => return Err(format!("unsupported fieldPath: {other}")),
    })
}

/// `metadata.labels['key']` → `key`.
fn subscript<'a>(path: &'a str, field: &str) -> Option<&'a str> {
    path.strip_prefix(field)?
        .strip_prefix("['")?
        .strip_suffix("']")
}

/// Secrets and ConfigMaps of one namespace, each read at most once per container start.
pub(super) struct Sources {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    secret_cache: HashMap<String, Option<Secret>>,
    config_map_cache: HashMap<String, Option<ConfigMap>>,
}

impl Sources {
    pub(super) fn new(client: Client, namespace: &str) -> Self {
        Sources {
            secrets: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client, namespace),
            secret_cache: HashMap::new(),
            config_map_cache: HashMap::new(),
        }
    }

    /// The Secret's data, or `None` when it does not exist.
    pub(super) async fn secret(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, ByteString>>, String> {
        let secret = read_once(&self.secrets, &mut self.secret_cache, name).await?;
        Ok(secret.map(|s| s.data.clone().unwrap_or_default()))
    }

    /// The ConfigMap's `data` and `binaryData` merged, or `None` when it does not exist.
    pub(super) async fn config_map(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, ByteString>>, String> {
        let config_map = read_once(&self.config_maps, &mut self.config_map_cache, name).await?;
        Ok(config_map.map(|cm| {
            let text = cm.data.iter().flatten();
            let binary = cm.binary_data.iter().flatten();
            text.map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                .chain(binary.map(|(k, v)| (k.clone(), v.clone())))
                .collect()
        }))
    }
}

/// The named object, read from the API server the first time it is asked for and from `cache`
/// after that (`None` when it does not exist).
async fn read_once<'c, K>(
    api: &Api<K>,
    cache: &'c mut HashMap<String, Option<K>>,
    name: &str,
) -> Result<Option<&'c K>, String>
where
    K: Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    if !cache.contains_key(name) {
        let found = api.get_opt(name).await.map_err(|e| e.to_string())?;
        cache.insert(name.to_string(), found);
    }
    Ok(cache[name].as_ref())
}

/// The variables the kubelet defines from `envFrom`, `env` and the service variables, in the
/// kubelet's precedence. An error is the message of a `CreateContainerConfigError`.
pub(super) async fn container_env(
    sources: &mut Sources,
    pod: &Pod,
    container: &Container,
    service_env: &[(String, String)],
) -> Result<BTreeMap<String, String>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut env = BTreeMap::new();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        let (data, optional, missing) = if let Some(r) = &from.secret_ref {
            let data = sources.secret(&r.name).await?;
            (data, r.optional, format!("secret \"{}\" not found", r.name))
        } else if let Some(r) = &from.config_map_ref {
            let data = sources.config_map(&r.name).await?;
            (
                data,
                r.optional,
                format!("configmap \"{}\" not found", r.name),
            )
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (key, value) in data {
                    env.insert(format!("{prefix}{key}"), text(value));
                }
            }
            None if optional == Some(true) => {}
            None => return Err(missing),
        }
    }

    for var in container.env.iter().flatten() {
        let value = match var.value_from.as_ref() {
            Some(from) if var.value.as_deref().unwrap_or_default().is_empty() => {
                if let Some(field) = &from.field_ref {
                    Some(field_value(pod, &field.field_path)?)
                } else if let Some(key) = &from.secret_key_ref {
                    let data = sources.secret(&key.name).await?;
                    lookup_key(data, &key.key, key.optional, "Secret", namespace, &key.name)?
                } else if let Some(key) = &from.config_map_key_ref {
                    let data = sources.config_map(&key.name).await?;
                    lookup_key(
                        data,
                        &key.key,
                        key.optional,
                        "ConfigMap",
                        namespace,
                        &key.name,
                    )?
                } else {
                    return Err(format!(
                        "environment variable {}: only fieldRef, secretKeyRef and configMapKeyRef \
                         are supported by the pod runner",
                        var.name
                    ));
                }
            }
            _ => Some(expand(var.value.as_deref().unwrap_or_default(), |name| {
                env.get(name).cloned().or_else(|| lookup(service_env, name))
            })),
        };
        if let Some(value) = value {
            env.insert(var.name.clone(), value);
        }
    }

    for (name, value) in service_env {
        env.entry(name.clone()).or_insert_with(|| value.clone());
    }
    Ok(env)
}

/// A key of a Secret or ConfigMap; `Ok(None)` when it may be skipped (`optional`).
fn lookup_key(
    data: Option<BTreeMap<String, ByteString>>,
    key: &str,
    optional: Option<bool>,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, String> {
    let optional = optional == Some(true);
    match data {
        None if optional => Ok(None),
        None => Err(format!("{} \"{name}\" not found", kind.to_lowercase())),
        Some(mut data) => match data.remove(key) {
            Some(value) => Ok(Some(text(value))),
            None if optional => Ok(None),
            None => Err(format!(
                "couldn't find key {key} in {kind} {namespace}/{name}"
            )),
        },
    }
}

fn lookup(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

fn text(value: ByteString) -> String {
    String::from_utf8_lossy(&value.0).into_owned()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{api::core::v1::PodSpec, apimachinery::pkg::apis::meta::v1::ObjectMeta};

    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_like_the_kubelet() {
        assert_eq!(expand("$(A)-$(A)", vars), "alpha-alpha");
        assert_eq!(expand("x$(EMPTY)y", vars), "xy");
        assert_eq!(expand("$(MISSING)", vars), "$(MISSING)");
        assert_eq!(expand("$$(A)", vars), "$(A)");
        assert_eq!(expand("$$$(A)", vars), "$alpha");
        assert_eq!(expand("cost: $5", vars), "cost: $5");
        assert_eq!(expand("end$", vars), "end$");
        assert_eq!(expand("$(A", vars), "$(A");
        assert_eq!(expand("é$é", vars), "é$é");
    }

    #[test]
    fn downward_api_fields() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                uid: Some("u-1".into()),
                labels: Some([("app".to_string(), "x".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(field_value(&pod, "metadata.name").unwrap(), "p");
        assert_eq!(field_value(&pod, "metadata.uid").unwrap(), "u-1");
        assert_eq!(field_value(&pod, "metadata.labels['app']").unwrap(), "x");
        assert_eq!(field_value(&pod, "metadata.labels").unwrap(), "app=\"x\"\n");
        assert_eq!(field_value(&pod, "spec.nodeName").unwrap(), "node-a");
        assert_eq!(field_value(&pod, "status.podIP").unwrap(), POD_IP);
        assert!(field_value(&pod, "spec.priority").is_err());
    }
}
