//! The legacy `TrafficPermission` resource: sources and destinations matched on tags.

use serde::{Deserialize, Serialize};

use crate::{
    dataplane::{Tags, check_selector},
    error::Causes,
};

/// A legacy permission: every source may reach every destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficPermission {
    /// Callers, by tags.
    #[serde(default)]
    pub sources: Vec<Selector>,
    /// Dataplanes reached, by tags.
    #[serde(default)]
    pub destinations: Vec<Selector>,
}

/// `{match: {tag: value}}`; a value `*` matches any value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// The tags to match.
    #[serde(rename = "match", default)]
    pub tags: Tags,
}

impl TrafficPermission {
    /// Checks that both lists have entries and every selector at least one valid tag.
    pub fn check(&self, causes: &mut Causes) {
        for (field, list) in [("sources", &self.sources), ("destinations", &self.destinations)] {
            if list.is_empty() {
                causes.add(field, "must have at least one entry");
            }
            for (i, selector) in list.iter().enumerate() {
                let at = format!("{field}[{i}].match");
                if selector.tags.is_empty() {
                    causes.add(&at, "must have at least one tag");
                }
                check_selector(&at, &selector.tags, causes);
            }
        }
    }
}
