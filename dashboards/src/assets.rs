//! The built front end (`dashboards/assets/`, made by `npm ci && npm run build` in
//! `dashboards/web/` and committed), embedded in the binary: no Node at `cargo build`, no
//! network at run time.

pub const INDEX_HTML: &str = include_str!("../assets/index.html");
pub const LOGIN_HTML: &str = include_str!("../assets/login.html");

/// One embedded file: its bytes, the same gzipped (by build.rs), its content type.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub bytes: &'static [u8],
    pub gzip: &'static [u8],
    pub content_type: &'static str,
}

macro_rules! asset {
    ($name:literal, $type:literal) => {
        (
            $name,
            Asset {
                bytes: include_bytes!(concat!("../assets/", $name)),
                gzip: include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".gz")),
                content_type: $type,
            },
        )
    };
}

static FILES: &[(&str, Asset)] = &[
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("login.js", "text/javascript; charset=utf-8"),
];

/// The asset called `name`.
pub fn get(name: &str) -> Option<Asset> {
    FILES.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
}

/// The asset names.
pub fn names() -> Vec<&'static str> {
    FILES.iter().map(|(n, _)| *n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzipped_assets_are_smaller_and_named() {
        let js = get("app.js").unwrap();
        assert!(js.gzip.starts_with(&[0x1f, 0x8b]));
        assert!(
            js.gzip.len() * 2 < js.bytes.len(),
            "{} vs {}",
            js.gzip.len(),
            js.bytes.len()
        );
        assert!(get("nope").is_none());
        assert_eq!(names(), ["app.js", "app.css", "login.js"]);
    }
}
