//! The XID catalogue: every XID code rigwatch knows, its class and what to do about it.
//!
//! This table is the ONE place that decides how an XID affects a GPU. Sources: NVIDIA's
//! "Xid Errors" catalogue (docs.nvidia.com/deploy/xid-errors, resolution buckets such as
//! RESTART_APP / RESET_GPU / RESTART_BM) and the GPU memory error management note (XID 48,
//! 63, 64, 94, 95). Classes:
//!
//! | class | effect on the GPU | examples |
//! |---|---|---|
//! | [`XidClass::Application`] | none: the fault is attributed to the job that ran, never held against the supplier | 13, 31, 43, 45, 94 |
//! | [`XidClass::Hardware`] | unhealthy (drained) until the GPU is reset or the node rebooted | 48, 61, 62, 64, 74, 79, 95, 119, 120 |
//! | [`XidClass::Informational`] | none: recorded and watched (alert rules may count them) | 63, 92 |
//! | [`XidClass::Unknown`] | degraded until a clean interval passes | anything not listed |
//!
//! Notes on the borderline codes: 63 records a row remap in the InfoROM (the remap takes
//! effect at the next reset: informational); 64 is the *failure* to record one (hardware);
//! 94 is a contained ECC error: only the application that touched the memory is killed, so it
//! is the job's fault event, not the GPU's; 95 is uncontained and needs a reset.

/// How an XID affects a GPU's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum XidClass {
    Application,
    Hardware,
    Informational,
    Unknown,
}

impl XidClass {
    pub fn as_str(self) -> &'static str {
        match self {
            XidClass::Application => "application",
            XidClass::Hardware => "hardware",
            XidClass::Informational => "informational",
            XidClass::Unknown => "unknown",
        }
    }
}

/// One catalogue entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XidInfo {
    pub code: u32,
    pub name: &'static str,
    pub class: XidClass,
    /// The recommended action, in NVIDIA's resolution-bucket terms.
    pub action: &'static str,
}

macro_rules! catalogue {
    ($($code:literal, $class:ident, $name:literal, $action:literal;)*) => {
        /// Every known XID, sorted by code.
        pub const CATALOGUE: &[XidInfo] = &[
            $(XidInfo { code: $code, name: $name, class: XidClass::$class, action: $action }),*
        ];
    };
}

catalogue! {
    8, Application, "GPU stopped processing (channel idle timeout)", "restart the application (RESTART_APP)";
    13, Application, "Graphics engine exception", "restart the application; check the job's CUDA code (RESTART_APP)";
    31, Application, "GPU memory page fault (MMU fault)", "restart the application; check the job for illegal memory access (RESTART_APP)";
    43, Application, "GPU stopped processing (application fault)", "restart the application (RESTART_APP)";
    45, Application, "Preemptive cleanup after a previous error", "none: follows the job's termination (IGNORE)";
    48, Hardware, "Double-bit (uncorrectable) ECC error", "drain and reset the GPU (RESET_GPU); RMA if it repeats";
    61, Hardware, "Internal micro-controller breakpoint/warning", "drain and reset the GPU (RESET_GPU)";
    62, Hardware, "Internal micro-controller halt", "drain and reset the GPU (RESET_GPU)";
    63, Informational, "ECC page retirement / row remap recorded", "watch; reset the GPU when idle so the remap takes effect";
    64, Hardware, "ECC page retirement / row remap recording failure", "drain and reset the GPU (RESET_GPU); RMA if it repeats";
    74, Hardware, "NVLink error", "drain and reset the GPU (RESET_GPU); check the NVLink/NVSwitch fabric";
    79, Hardware, "GPU has fallen off the bus", "drain and reboot the node (RESTART_BM); check PCIe seating, power and cooling";
    92, Informational, "High single-bit ECC error rate", "watch; RMA if the rate keeps rising";
    94, Application, "Contained ECC error", "restart the application; reset the GPU when idle to remap the row";
    95, Hardware, "Uncontained ECC error", "drain and reset the GPU (RESET_GPU)";
    109, Application, "Context switch timeout", "restart the application (RESTART_APP)";
    119, Hardware, "GSP RPC timeout", "drain and reset the GPU (RESET_GPU)";
    120, Hardware, "GSP error", "drain and reset the GPU (RESET_GPU)";
    140, Hardware, "Unrecovered ECC error", "drain and reset the GPU (RESET_GPU)";
}

/// What rigwatch recommends for an XID it does not know.
pub const UNKNOWN_ACTION: &str = "look the code up in NVIDIA's Xid catalogue; watch the GPU";

/// The catalogue entry for `code`, if known.
pub fn lookup(code: u32) -> Option<&'static XidInfo> {
    CATALOGUE
        .binary_search_by_key(&code, |x| x.code)
        .ok()
        .map(|i| &CATALOGUE[i])
}

/// The class of `code` (Unknown if it is not in the catalogue).
pub fn class(code: u32) -> XidClass {
    lookup(code).map_or(XidClass::Unknown, |x| x.class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_sorted_and_classes_match_the_brief() {
        assert!(CATALOGUE.windows(2).all(|w| w[0].code < w[1].code));
        for c in [13, 31, 43, 45, 94] {
            assert_eq!(class(c), XidClass::Application, "xid {c}");
        }
        for c in [48, 61, 62, 64, 74, 79, 95, 119, 120] {
            assert_eq!(class(c), XidClass::Hardware, "xid {c}");
        }
        for c in [63, 92] {
            assert_eq!(class(c), XidClass::Informational, "xid {c}");
        }
        assert_eq!(class(9999), XidClass::Unknown);
        assert!(lookup(79).unwrap().action.contains("reboot"));
    }
}
