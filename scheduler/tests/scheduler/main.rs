//! Integration tests of rigwatch-scheduler: ledger reconciliation and placement safety
//! (proptest), the simulator on the openb trace, and the Kubernetes extender fixtures.

#[cfg(feature = "extender")]
mod extender_fixtures;
mod ledger_props;
mod placement_props;
mod sim_openb;
