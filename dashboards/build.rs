//! Embeds every `dashboards/*.json` file (adding a dashboard is adding a file), and gzips
//! the front-end bundles once here so that the server sends them compressed.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("dashboards/ directory")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            println!("cargo:rerun-if-changed={}", p.display());
            p.file_stem().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    names.sort();
    let mut out = String::from(
        "/// Every prebuilt dashboard: (name, JSON text).\npub static DASHBOARDS: &[(&str, &str)] = &[\n",
    );
    for n in &names {
        let path = dir.join(format!("{n}.json"));
        let _ = writeln!(
            out,
            "    ({n:?}, include_str!({:?})),",
            path.display().to_string()
        );
    }
    out.push_str("];\n");
    let out_dir = std::env::var("OUT_DIR").unwrap();
    let dest = Path::new(&out_dir).join("dashboards.rs");
    std::fs::write(dest, out).expect("write dashboards.rs");

    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    for name in ["app.js", "app.css", "login.js"] {
        let src = assets.join(name);
        println!("cargo:rerun-if-changed={}", src.display());
        let bytes = std::fs::read(&src).expect("built front-end asset (npm run build)");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &bytes).expect("gzip");
        let gz = gz.finish().expect("gzip");
        std::fs::write(Path::new(&out_dir).join(format!("{name}.gz")), gz).expect("write gz");
    }
}
