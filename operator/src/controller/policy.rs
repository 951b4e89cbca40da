//! What the operator's installation decides for the Jobs of every pipeline: the default image,
//! the images and service accounts a pipeline may name, the pod settings a pipeline's
//! `execution` overrides and those it may not (chart values `transformerImage`, `allowedImages`,
//! `allowedServiceAccounts` and `jobDefaults`).
//!
//! Whoever may create an EventPipeline in a namespace makes the operator create Jobs there, so
//! a pipeline is trusted as far as someone who may create Jobs in its namespace — except for the
//! image, the service account and the enforced pod settings, which the installation decides.

use crate::crd::ExecutionSpec;
use crate::enforced::EnforcedPodSettings;
use crate::pod_settings::PodSettings;

/// The installation's decisions for every pipeline's Jobs.
#[derive(Clone, Debug, Default)]
pub struct JobPolicy {
    /// The transformer image when a pipeline names none; always allowed.
    pub image: String,
    /// Prefixes of the other images a pipeline may name (`registry.example.com/data/`); none:
    /// only the default image. A prefix matches whole path segments: `…/data` admits
    /// `…/data/transformer:2` and `…/data:2`, not `…/data-evil/`.
    pub allowed_images: Vec<String>,
    /// The service accounts a pipeline may name; none: any in its namespace.
    pub allowed_service_accounts: Vec<String>,
    /// Pod settings for the fields a pipeline leaves out.
    pub pod_defaults: PodSettings,
    /// Pod settings every Job gets, whatever its pipeline says.
    pub enforced: EnforcedPodSettings,
}

impl JobPolicy {
    /// Refuses a pipeline whose image or service account the installation does not allow, naming
    /// the field and the chart value that would allow it.
    pub fn admit(&self, execution: &ExecutionSpec) -> Result<(), String> {
        if let Some(image) = &execution.image
            && *image != self.image
            && !self.allowed_images.iter().any(|prefix| within(image, prefix))
        {
            return Err(format!(
                "execution.image {image:?} is not allowed here: the operator runs {:?} and images starting with {:?}; \
                 ask for it to be added to the chart value allowedImages",
                self.image, self.allowed_images
            ));
        }
        if let Some(account) = &self.pod(execution).service_account_name
            && !self.allowed_service_accounts.is_empty()
            && !self.allowed_service_accounts.contains(account)
        {
            return Err(format!(
                "execution.serviceAccountName {account:?} is not allowed here: the operator accepts {:?}; \
                 ask for it to be added to the chart value allowedServiceAccounts",
                self.allowed_service_accounts
            ));
        }
        self.enforced.admit(&execution.pod)
    }

    /// The image a pipeline's Jobs run.
    pub fn image(&self, execution: &ExecutionSpec) -> String {
        execution.image.clone().unwrap_or_else(|| self.image.clone())
    }

    /// A pipeline's pod settings: the installation's defaults fill what it leaves out, and the
    /// enforced settings are put in.
    pub fn pod(&self, execution: &ExecutionSpec) -> PodSettings {
        self.enforced.apply(execution.pod.or(&self.pod_defaults))
    }
}

/// Whether an image lies under an allowed prefix: the prefix ends where a path segment, the
/// repository or the tag ends.
fn within(image: &str, prefix: &str) -> bool {
    match image.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with(['/', ':', '@']) || rest.is_empty() || rest.starts_with(['/', ':', '@']),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> JobPolicy {
        JobPolicy {
            image: "ghcr.io/eventpipe/eventpipe-transformer:0.1.0".into(),
            allowed_images: vec!["registry.example.com/data/".into()],
            allowed_service_accounts: vec!["eventpipe-jobs".into()],
            pod_defaults: PodSettings { service_account_name: Some("eventpipe-jobs".into()), ..PodSettings::default() },
            enforced: EnforcedPodSettings::default(),
        }
    }

    fn execution(image: Option<&str>, account: Option<&str>) -> ExecutionSpec {
        ExecutionSpec {
            image: image.map(str::to_string),
            pod: PodSettings { service_account_name: account.map(str::to_string), ..PodSettings::default() },
            ..ExecutionSpec::default()
        }
    }

    #[test]
    fn the_default_image_and_allowed_prefixes_pass() {
        let policy = policy();
        assert_eq!(policy.admit(&execution(None, None)), Ok(()));
        assert_eq!(policy.admit(&execution(Some(&policy.image), None)), Ok(()));
        assert_eq!(policy.admit(&execution(Some("registry.example.com/data/transformer:2"), None)), Ok(()));
    }

    #[test]
    fn a_prefix_admits_whole_path_segments_only() {
        let policy = JobPolicy { allowed_images: vec!["registry.example.com/data".into()], ..policy() };
        assert_eq!(policy.admit(&execution(Some("registry.example.com/data/transformer:2"), None)), Ok(()));
        assert_eq!(policy.admit(&execution(Some("registry.example.com/data:2"), None)), Ok(()));
        assert_eq!(policy.admit(&execution(Some("registry.example.com/data@sha256:0123"), None)), Ok(()));
        assert!(policy.admit(&execution(Some("registry.example.com/data-evil/miner:1"), None)).is_err());
        assert!(policy.admit(&execution(Some("registry.example.com/database:1"), None)).is_err());
        let with_slash = JobPolicy { allowed_images: vec!["registry.example.com/data/".into()], ..policy };
        assert!(with_slash.admit(&execution(Some("registry.example.com/data-evil/miner:1"), None)).is_err());
    }

    #[test]
    fn another_image_is_refused_naming_the_chart_value() {
        let error = policy().admit(&execution(Some("docker.io/someone/miner:latest"), None)).unwrap_err();
        assert!(error.starts_with("execution.image \"docker.io/someone/miner:latest\" is not allowed"), "{error}");
        assert!(error.contains("allowedImages"), "{error}");
    }

    #[test]
    fn service_accounts_are_checked_after_the_defaults_apply() {
        let policy = policy();
        assert_eq!(policy.admit(&execution(None, Some("eventpipe-jobs"))), Ok(()));
        let error = policy.admit(&execution(None, Some("cluster-admin-sa"))).unwrap_err();
        assert!(error.contains("allowedServiceAccounts"), "{error}");
        let open = JobPolicy { allowed_service_accounts: Vec::new(), ..policy };
        assert_eq!(open.admit(&execution(None, Some("anything"))), Ok(()));
    }
}
