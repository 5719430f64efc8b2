//! The legacy `TrafficPermission` resource: sources and destinations matched on tags.

use serde::{Deserialize, Serialize};

use crate::{
    dataplane::{SERVICE_TAG, Tags, check_tags},
    error::Causes,
};

/// A legacy permission: every source may reach every destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficPermission {
    /// Callers, by tags.
    pub sources: Vec<Selector>,
    /// Dataplanes reached, by tags.
    pub destinations: Vec<Selector>,
}

/// `{match: {tag: value}}`; a value `*` matches any value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// The tags to match.
    #[serde(rename = "match")]
    pub tags: Tags,
}

impl TrafficPermission {
    /// Checks that both lists are present and every selector names a service.
    pub fn check(&self, causes: &mut Causes) {
        for (field, list) in [("sources", &self.sources), ("destinations", &self.destinations)] {
            if list.is_empty() {
                causes.add(field, "must have at least one entry");
            }
            for (i, selector) in list.iter().enumerate() {
                let at = format!("{field}[{i}].match");
                check_tags(&at, &selector.tags, causes);
                if !selector.tags.contains_key(SERVICE_TAG) {
                    causes.add(at, format!("tag {SERVICE_TAG:?} is required (use \"*\" for any)"));
                }
            }
        }
    }
}
