//! Mesh identity: SPIFFE IDs, mesh CAs, X.509-SVIDs, CSRs, trust bundles, dataplane tokens and
//! the renewal schedule. Pure: no network, no files, no async runtime; one crypto library (aws-lc-rs).

#![warn(missing_docs)]

pub mod bundle;
pub mod ca;
pub mod csr;
pub mod rotation;
pub mod server_cert;
pub mod svid;
pub mod token;
mod x509;

pub use bundle::{BundleError, TrustBundle, VerifiedSvid, VerifyError};
pub use ca::{BuiltinCaOptions, Ca, CaError, CaInfo, CaMaterial, generate_builtin, validate_provided};
pub use csr::{CsrError, WorkloadKey, generate_key_and_csr};
pub use rotation::{Backoff, renew_at};
pub use server_cert::{ServerCert, generate_control_plane_ca};
pub use svid::{IssuedSvid, SvidError, check_svid_compliance};
pub use token::{DataplaneClaims, SigningKey, TokenError, VerifyingKey};
pub use ward_api::spiffe::{self, SpiffeId, SpiffeIdError};
