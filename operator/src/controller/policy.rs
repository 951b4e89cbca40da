//! What the operator's installation decides for the Jobs of every pipeline: the default image,
//! the images and service accounts a pipeline may name, and the pod settings a pipeline's
//! `execution` overrides (chart values `transformerImage`, `allowedImages`,
//! `allowedServiceAccounts` and `jobDefaults`).
//!
//! Whoever may create an EventPipeline in a namespace makes the operator create Jobs there, so
//! a pipeline is trusted as far as someone who may create Jobs in its namespace — except for the
//! image and the service account, which the installation can restrict.

use crate::crd::ExecutionSpec;
use crate::pod_settings::PodSettings;

/// The installation's decisions for every pipeline's Jobs.
#[derive(Clone, Debug, Default)]
pub struct JobPolicy {
    /// The transformer image when a pipeline names none; always allowed.
    pub image: String,
    /// Prefixes of the other images a pipeline may name (`registry.example.com/data/`); none:
    /// only the default image.
    pub allowed_images: Vec<String>,
    /// The service accounts a pipeline may name; none: any in its namespace.
    pub allowed_service_accounts: Vec<String>,
    /// Pod settings for the fields a pipeline leaves out.
    pub pod_defaults: PodSettings,
}

impl JobPolicy {
    /// Refuses a pipeline whose image or service account the installation does not allow, naming
    /// the field and the chart value that would allow it.
    pub fn admit(&self, execution: &ExecutionSpec) -> Result<(), String> {
        if let Some(image) = &execution.image
            && *image != self.image
            && !self.allowed_images.iter().any(|prefix| image.starts_with(prefix.as_str()))
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
        Ok(())
    }

    /// The image a pipeline's Jobs run.
    pub fn image(&self, execution: &ExecutionSpec) -> String {
        execution.image.clone().unwrap_or_else(|| self.image.clone())
    }

    /// A pipeline's pod settings, the installation's defaults filling what it leaves out.
    pub fn pod(&self, execution: &ExecutionSpec) -> PodSettings {
        execution.pod.or(&self.pod_defaults)
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
