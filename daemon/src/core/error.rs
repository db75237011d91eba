//! The one error type of labd's core. Every variant has a stable code; the API maps each to
//! an HTTP status in one exhaustive match (`api::error`).

use crate::core::names::NameError;
use crate::core::props::PropertyError;
use crate::host::zfs::{ZfsError, ZfsErrorKind};
use crate::wire::ErrorInfo;

/// Why labd refused to do something that is well-formed but unsafe or impossible now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The dataset has child datasets.
    HasChildren,
    /// The dataset has snapshots.
    HasSnapshots,
    /// A snapshot is held.
    Held,
    /// Snapshots newer than the rollback target exist.
    NewerSnapshots,
    /// labd did not create the dataset.
    NotManaged,
    /// The configured root dataset itself.
    RootDataset,
    /// An NFS export uses the dataset.
    Exported,
    /// The VM is running.
    Running,
    /// The VM is not running.
    NotRunning,
    /// It exists already (a switch, or a bridge labd would create).
    Exists,
    /// Something uses it (a switch that VMs name or taps are on).
    InUse,
}

impl Refusal {
    /// Stable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::HasChildren => "has_children",
            Self::HasSnapshots => "has_snapshots",
            Self::Held => "held",
            Self::NewerSnapshots => "newer_snapshots",
            Self::NotManaged => "not_managed",
            Self::RootDataset => "root_dataset",
            Self::Exported => "exported",
            Self::Running => "running",
            Self::NotRunning => "not_running",
            Self::Exists => "exists",
            Self::InUse => "in_use",
        }
    }
}

/// An error of a core operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field broke a rule; nothing was done.
    #[error("{field}: {message}")]
    Invalid {
        /// The request field (`name`, `properties.quota`, …).
        field: String,
        /// The rule's code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The resource does not exist.
    #[error("{what} does not exist")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// Refused for safety or consistency.
    #[error("{message}")]
    Refused {
        /// Why.
        reason: Refusal,
        /// Details, naming what stands in the way.
        message: String,
    },
    /// labd is stopping and takes no new work.
    #[error("labd is shutting down")]
    ShuttingDown,
    /// A job was stopped by shutdown before it finished.
    #[error("labd shut down before the job finished")]
    Interrupted,
    /// The ZFS driver failed.
    #[error(transparent)]
    Zfs(#[from] ZfsError),
    /// The network driver failed (switches, taps).
    #[error(transparent)]
    Net(#[from] crate::host::net::NetError),
    /// A bug: something that should not happen.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A validation error: request field `field` broke rule `code`.
pub fn invalid(field: &str, code: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.to_owned(),
        code,
        message: message.into(),
    }
}

impl Error {
    /// A validation error for `field` from a name rule.
    pub fn name(field: &str, e: &NameError) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            code: e.rule.code(),
            message: e.to_string(),
        }
    }

    /// A validation error for a property.
    pub fn property(e: &PropertyError) -> Self {
        Self::Invalid {
            field: format!("properties.{}", e.property),
            code: "invalid_property",
            message: e.to_string(),
        }
    }

    /// A refusal.
    pub fn refused(reason: Refusal, message: impl Into<String>) -> Self {
        Self::Refused {
            reason,
            message: message.into(),
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { code, .. } => code,
            Self::NotFound { .. } => "not_found",
            Self::Refused { reason, .. } => reason.code(),
            Self::ShuttingDown => "shutting_down",
            Self::Interrupted => "interrupted",
            Self::Zfs(ZfsError::Command { kind, .. }) => match kind {
                ZfsErrorKind::NotFound => "not_found",
                ZfsErrorKind::Exists => "exists",
                ZfsErrorKind::Busy => "busy",
                ZfsErrorKind::HasChildren => "has_children",
                ZfsErrorKind::HasDependents => "has_dependents",
                ZfsErrorKind::NewerSnapshots => "newer_snapshots",
                ZfsErrorKind::InvalidValue => "invalid_value",
                ZfsErrorKind::Unsupported => "unsupported",
                ZfsErrorKind::PermissionDenied => "permission_denied",
                ZfsErrorKind::Other => "zfs_failed",
            },
            Self::Zfs(ZfsError::Run(_)) => "command_failed",
            Self::Net(crate::host::net::NetError::Command { .. }) => "net_failed",
            Self::Net(crate::host::net::NetError::Run(_)) => "command_failed",
            Self::Net(crate::host::net::NetError::Parse { .. }) => "internal",
            Self::Zfs(ZfsError::Parse(_)) | Self::Internal(_) => "internal",
        }
    }

    /// The wire form.
    pub fn info(&self) -> ErrorInfo {
        ErrorInfo {
            code: self.code().to_owned(),
            message: match self {
                Self::Invalid { message, .. } => message.clone(),
                other => other.to_string(),
            },
            field: match self {
                Self::Invalid { field, .. } => Some(field.clone()),
                _ => None,
            },
        }
    }
}
