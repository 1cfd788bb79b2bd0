//! rigwatch's supplier portal: what GPU suppliers (and analysts) see in a browser.
//!
//! ```text
//!  browser ──cookie──▶ access layer (server/src/access.rs: route table, token or session,
//!     │                  CSRF + Origin on writes) ──▶ portal routes (this crate)
//!     │                                                 ├─ /portal, /portal/login, assets
//!     │                                                 ├─ /portal/api/{me,agent-token,dashboards}
//!     │                                                 └─ /portal/events (SSE, scoped SQL)
//!     └──cookie──▶ /api/v1/query_range, /api/v1/sql  (the same scoped query path as tokens)
//! ```
//!
//! Sessions ([`session::Sessions`]) live here; the binary's access layer reads them. Charts
//! are drawn in the browser with uPlot from the Prometheus API; prebuilt dashboards are
//! `dashboards/*.json` files ([`builtin`]), exportable as Grafana JSON.

pub mod assets;
pub mod builtin;
pub mod error;
pub mod live;
pub mod routes;
pub mod session;
pub mod throttle;

pub use error::{Error, Result};
pub use routes::{PortalLimits, PortalState, router};
pub use session::{Credential, Sessions};
