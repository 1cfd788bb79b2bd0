//! The allocator: live fleet view, placement policies, leases, the earnings ledger and the
//! trace-driven simulator.
