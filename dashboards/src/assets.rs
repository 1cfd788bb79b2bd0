//! The built front end (`dashboards/assets/`, made by `npm ci && npm run build` in
//! `dashboards/web/` and committed), embedded in the binary: no Node at `cargo build`, no
//! network at run time.

pub const INDEX_HTML: &str = include_str!("../assets/index.html");
pub const LOGIN_HTML: &str = include_str!("../assets/login.html");

static FILES: &[(&str, &[u8], &str)] = &[
    (
        "app.js",
        include_bytes!("../assets/app.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "app.css",
        include_bytes!("../assets/app.css"),
        "text/css; charset=utf-8",
    ),
    (
        "login.js",
        include_bytes!("../assets/login.js"),
        "text/javascript; charset=utf-8",
    ),
];

/// An asset's bytes and content type.
pub fn get(name: &str) -> Option<(&'static [u8], &'static str)> {
    FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, b, t)| (*b, *t))
}

/// The asset names.
pub fn names() -> Vec<&'static str> {
    FILES.iter().map(|(n, _, _)| *n).collect()
}
