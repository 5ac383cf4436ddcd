//! What `cargo xtask bench` makes of a [`Results`]: the benchmark's goals evaluated on the
//! run's own figures ([`goals`]), the files of a run ([`write`]: the JSON, a markdown report
//! and three PNG plots) and the summary printed at the end ([`summary`]).
//!
//! The plots are drawn with `plotters` on its bitmap backend; their text goes through
//! `ab_glyph` with the TTF file [`FONT_PATH`] (Debian's `fonts-dejavu-core`, installed by
//! `cargo xtask setup`), read at run time, so no system font library is involved. Without
//! that file the plots are not written, the JSON and the markdown still are, and [`write`]
//! fails with a [`PlotsNotWritten`] naming what was written.
//!
//! One concern a file: `goals` (the goals and their verdicts), `markdown` (the report),
//! `plots` (what the three PNGs show), `chart` (the one chart helper that draws them),
//! `summary` (the terminal text), with what they share in `figures` (the run's figures they
//! read: floor, rows of a case, medians over rounds) and `format` (numbers and dates as the
//! report writes them). This file writes the files.
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::results::Results;

mod chart;
mod figures;
mod format;
mod goals;
mod markdown;
mod plots;
#[cfg(test)]
mod sample;
mod summary;

pub use goals::goals;
pub use summary::summary;

/// The font of the plots' text: DejaVu Sans from Debian's `fonts-dejavu-core`.
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// Overrides [`FONT_PATH`] (any TTF/OTF file), e.g. on a system without that package.
pub const FONT_ENV: &str = "SVC_BENCH_FONT";

/// The plots were not (all) written; the JSON and the markdown were.
#[derive(Debug)]
pub struct PlotsNotWritten {
    /// The files that were written (JSON, markdown, and any plot drawn before the failure).
    pub written: Vec<PathBuf>,
    pub error: String,
}

impl std::fmt::Display for PlotsNotWritten {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files: Vec<String> = self
            .written
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        write!(
            f,
            "plots not written: {}; written: {}",
            self.error,
            files.join(", ")
        )
    }
}

impl std::error::Error for PlotsNotWritten {}

pub(super) struct PlotOutcome {
    pub(super) written: Vec<PathBuf>,
    pub(super) error: Option<String>,
}

/// Writes <dir>/<stamp>.json (the Results, pretty), <dir>/<stamp>.md (the report) and PNG plots
/// <dir>/<stamp>-packet.png, -e2e.png, -cpu.png, -install.png; returns the paths.
///
/// The plots are drawn first, so the markdown links only those that exist and notes why the
/// others do not. If a plot cannot be drawn (e.g. no font file), the JSON and the markdown are
/// still written and the error is a [`PlotsNotWritten`] listing the files that were.
pub fn write(r: &Results, dir: &Path, stamp: &str) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let plots = match plots::write_plots(r, dir, stamp) {
        Ok(written) => PlotOutcome {
            written,
            error: None,
        },
        Err((written, e)) => PlotOutcome {
            written,
            error: Some(format!("{e:#}")),
        },
    };

    let json_path = dir.join(format!("{stamp}.json"));
    let mut json = serde_json::to_string_pretty(r).context("cannot serialise the results")?;
    json.push('\n');
    std::fs::write(&json_path, json)
        .with_context(|| format!("cannot write {}", json_path.display()))?;

    let md_path = dir.join(format!("{stamp}.md"));
    std::fs::write(&md_path, markdown::markdown(r, stamp, &plots))
        .with_context(|| format!("cannot write {}", md_path.display()))?;

    let mut written = vec![json_path, md_path];
    written.extend(plots.written);
    match plots.error {
        None => Ok(written),
        Some(error) => Err(PlotsNotWritten { written, error }.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::markdown::cell;
    use crate::report::sample::sample;

    /// A fresh directory for a test's files; `SVC_BENCH_REPORT_DIR=<dir>` keeps them there
    /// (to look at the report and the plots of the sample run).
    fn temp_dir(name: &str) -> PathBuf {
        if let Some(d) = std::env::var_os("SVC_BENCH_REPORT_DIR") {
            return PathBuf::from(d).join(name);
        }
        let d =
            std::env::temp_dir().join(format!("svc-bench-report-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn write_produces_the_files() {
        let mut r = sample();
        r.goals = goals(&r);
        let dir = temp_dir("write");
        let stamp = "20261102T100000Z";
        let written = match write(&r, &dir, stamp) {
            Ok(w) => w,
            // Without the font (fonts-dejavu-core) only the plots are missing.
            Err(e) => match e.downcast::<PlotsNotWritten>() {
                Ok(p) if !Path::new(FONT_PATH).exists() => p.written,
                Ok(p) => panic!("{p}"),
                Err(e) => panic!("{e:#}"),
            },
        };
        let json = dir.join(format!("{stamp}.json"));
        let md = dir.join(format!("{stamp}.md"));
        assert!(
            written.contains(&json) && written.contains(&md),
            "{written:?}"
        );
        let back: Results = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(back.packet.len(), r.packet.len());
        assert_eq!(back.goals.len(), 21);

        let text = std::fs::read_to_string(&md).unwrap();
        assert!(
            text.starts_with("# svc-ebpf benchmark, 2026-11-02"),
            "{text}"
        );
        assert!(text.contains("| goal | target | measured | result | note |"));
        for g in &r.goals {
            assert!(text.contains(&cell(&g.name)), "goal {} missing", g.name);
        }
        assert!(text.contains("iptables-legacy-restore"));
        assert!(text.contains("BPF_PROG_TEST_RUN"));
        assert!(text.contains("- section tc: skipped"));
        // Paced runs: CPU per connection, and our BPF programs' share for ebpf.
        assert!(
            text.contains(
                "| ebpf | 1 | paced | 1 | 2,000 | 60 | 400 | 900 | 3,100 | 90.0 | 9.0 | 0 |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| nftables | 10,000 | paced | 1 | 2,000 | 60 | 400 | 900 | 3,100 | 150 | - | 0 |"
            ),
            "{text}"
        );
        // Section 5: one row per mode, the sample's medians.
        assert!(text.contains("## Socket-level load balancing for pods"));
        assert!(
            text.contains("| node | 1 | 500 | 2400 | 6.0 | 1.20 |"),
            "{text}"
        );
        assert!(
            text.contains("| all | 1 | 500 | 900 | 7.0 | 1.20 |"),
            "{text}"
        );
        if Path::new(FONT_PATH).exists() {
            for kind in ["packet", "e2e", "cpu", "install"] {
                let png = dir.join(format!("{stamp}-{kind}.png"));
                assert!(written.contains(&png), "{written:?}");
                let bytes = std::fs::read(&png).unwrap();
                assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
                assert!(text.contains("![") && text.contains(&format!("]({stamp}-{kind}.png)")));
            }
        }
        if std::env::var_os("SVC_BENCH_REPORT_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn write_a_quick_run() {
        // --quick: up to 1,000 Services, install times at one count only.
        let mut r = sample();
        r.quick = true;
        r.packet.retain(|p| p.services <= 1_000);
        r.e2e.retain(|e| e.services <= 1_000);
        r.programming.install.retain(|i| i.services == 1_000);
        r.memory.retain(|m| m.services <= 1_000);
        let dir = temp_dir("quick");
        let res = write(&r, &dir, "quick");
        if Path::new(FONT_PATH).exists() {
            assert_eq!(res.unwrap().len(), 6);
        }
        let text = std::fs::read_to_string(dir.join("quick.md")).unwrap();
        assert!(text.contains("(`--quick`"), "{text}");
        assert!(text.contains("| not measured |"), "{text}");
        assert!(text.contains("| MET |"), "{text}");
        if std::env::var_os("SVC_BENCH_REPORT_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn write_handles_an_empty_run() {
        let r = Results {
            notes: vec!["everything skipped".into()],
            ..Default::default()
        };
        let dir = temp_dir("empty");
        let res = write(&r, &dir, "x");
        if Path::new(FONT_PATH).exists() {
            let w = res.unwrap();
            assert_eq!(w.len(), 6);
        }
        let text = std::fs::read_to_string(dir.join("x.md")).unwrap();
        assert!(text.contains("not measured"));
        if std::env::var_os("SVC_BENCH_REPORT_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
