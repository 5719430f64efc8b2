//! Which dataplanes, and which of their inbounds, a policy's top-level `targetRef` selects,
//! and how specific that selection is: shared by every policy kind.

use crate::{
    dataplane::{Dataplane, Inbound, Tags, tags_match},
    permission::{ProxyType, TargetKind, TargetRef},
};

/// The label that holds a dataplane's Kubernetes namespace.
const NAMESPACE_LABEL: &str = "k8s.kuma.io/namespace";

/// How much of a dataplane a top-level targetRef selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selected {
    /// Nothing.
    None,
    /// Some of its inbounds, not all.
    Part,
    /// All of it.
    All,
}

/// Which of the dataplane `name` with `labels` a top-level targetRef selects; with `at`, only
/// whether it selects that one inbound (all of what is decided there, or none).
pub(crate) fn selects_destination(
    target: Option<&TargetRef>,
    name: &str,
    labels: &Tags,
    dp: &Dataplane,
    at: Option<&Inbound>,
) -> Selected {
    let Some(target) = target else { return Selected::All };
    let proxy_type = if dp.networking.gateway.is_some() { ProxyType::Gateway } else { ProxyType::Sidecar };
    if target.proxy_types.as_ref().is_some_and(|types| !types.is_empty() && !types.contains(&proxy_type)) {
        return Selected::None;
    }
    let inbounds = &dp.networking.inbound;
    let by_inbound = |selects: &dyn Fn(&Inbound) -> bool| match at {
        Some(inbound) if selects(inbound) => Selected::All,
        Some(_) => Selected::None,
        None => match inbounds.iter().filter(|i| selects(i)).count() {
            0 => Selected::None,
            n if n == inbounds.len() => Selected::All,
            _ => Selected::Part,
        },
    };
    match target.kind {
        // A MeshExternalService is no dataplane: such a permission never decides at an inbound.
        // Neither is a dataplane; Ward has no gateways or routes of these kinds.
        TargetKind::MeshExternalService
        | TargetKind::MeshGateway
        | TargetKind::MeshHTTPRoute
        | TargetKind::MeshMultiZoneService => Selected::None,
        TargetKind::Mesh => Selected::All,
        TargetKind::MeshService => by_inbound(&|i| i.service().is_some() && i.service() == target.name.as_deref()),
        TargetKind::MeshSubset | TargetKind::MeshServiceSubset => match target.subset_tags() {
            Some(tags) => by_inbound(&|i| tags_match(&tags, &i.tags)),
            None => Selected::None,
        },
        TargetKind::Dataplane => {
            // A namespace (Kubernetes') is the dataplane's k8s.kuma.io/namespace label, as Kuma reads it.
            let this = target.name.as_deref().is_none_or(|n| n == name)
                && target.namespace.as_deref().is_none_or(|ns| labels.get(NAMESPACE_LABEL).is_some_and(|l| l == ns))
                && target.labels.as_ref().is_none_or(|l| tags_match(l, labels));
            match (this, target.section_name.as_deref()) {
                (false, _) => Selected::None,
                (true, None) => Selected::All,
                (true, Some(section)) => by_inbound(&|i| i.is_section(section)),
            }
        }
    }
}
