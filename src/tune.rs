//! `cifar-kern tune`: times every tensor-core variant of every conv of the
//! four networks on this GPU and writes the fastest to the tile table
//! (`src/cuda/conv_tiles.txt`), which training then reads (nothing is timed
//! during training: a timed choice could differ between two runs).
//!
//! The shapes are every distinct conv (`models::conv_shapes`) at the
//! training batch in all three directions, and at the evaluator's batch
//! ([`EVAL_BATCH`]) forward only (evaluation computes no gradient). The
//! candidates are [`candidates`]: every tile, and for the weight gradient
//! several chunk counts around the heuristic's. Each is timed as `bench`
//! times a conv (the kernels alone, CUDA events, the GPU kept busy so the
//! host's launch time does not count): the median of [`TUNE_ITERS`]
//! launches after [`TUNE_WARMUP`].

use crate::bench::{median, need_gpu, progress, progress_done, table, ConvBuffers, ConvTimer};
use crate::checkpoint;
use crate::cuda::conv::{ConvKernel, ConvShape};
use crate::cuda::conv_tiles::{candidates, heuristic, Direction, TileTable, Variant, COMMITTED};
use crate::evaluate::EVAL_BATCH;
use crate::layers::Math;
use crate::models::conv_shapes::{peers_key, shared_convs};
use crate::models::ModelKind;
use crate::train::math_parser;
use anyhow::{anyhow, Context, Result};
use std::path::PathBuf;
use std::time::SystemTime;

pub const TUNE_WARMUP: usize = 5;
pub const TUNE_ITERS: usize = 20;

/// `tune`'s command line.
#[derive(Clone, Debug, clap::Args)]
pub struct TuneArgs {
    /// The math to tune: tf32 (the tensor-core variants); fp32 has one
    /// CUDA-core kernel per direction, nothing to choose.
    #[arg(long, value_parser = math_parser(), default_value = "tf32")]
    pub math: Math,
    /// The training batch to tune for (the evaluator's batch of 256 is
    /// tuned too, forward only).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch_size: u32,
    /// The table to write: this card's lines replace its earlier ones, the
    /// other cards' lines stay (from the table already there, else from the
    /// committed one built into this binary).
    #[arg(long, default_value = "src/cuda/conv_tiles.txt")]
    pub out: PathBuf,
}

/// One conv direction tuned.
#[derive(Clone, Debug, PartialEq)]
pub struct Tuned {
    pub shape: ConvShape,
    pub key: String,
    pub dir: Direction,
    pub best: Variant,
    pub best_ms: f64,
    pub heuristic: Variant,
    pub heuristic_ms: f64,
    pub tried: usize,
}

/// The table's header lines, before the entries (the format, then which
/// card was tuned when).
const FORMAT_HEADER: &str = "The tensor-core conv variant per card, direction and shape: written by
`cifar-kern tune` on a GPU, read by src/cuda/conv_tiles.rs; a shape or card
not listed gets the heuristic.
  sm_<arch> <direction> <shape> <tile> <weight-gradient chunks>";

/// The text of the new table: `base`'s entries of other cards and their
/// `tuned sm_<arch>` comment lines, then `arch`'s tuned entries, described
/// by `tuned_line`.
pub fn table_text(base: &str, arch: u32, tuned_line: &str, tuned: &[Tuned]) -> Result<String, String> {
    let mut table = TileTable::parse(base)?;
    table.remove_arch(arch);
    for t in tuned {
        table.insert(arch, t.dir, &t.shape, t.best);
    }
    let mut header = FORMAT_HEADER.to_string();
    let own = format!("tuned sm_{arch}:");
    for line in base.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            if comment.starts_with("tuned sm_") && !comment.starts_with(&own) {
                header.push('\n');
                header.push_str(comment);
            }
        }
    }
    header.push('\n');
    header.push_str(tuned_line);
    Ok(table.to_text(&header))
}

/// Today's date (UTC) as YYYY-MM-DD.
pub fn today() -> String {
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    now[..10].to_string()
}

/// The summary: one row per conv direction, then the totals.
pub fn summary(tuned: &[Tuned]) -> String {
    let headers: Vec<String> = [
        "conv shape",
        "direction",
        "chosen",
        "ms",
        "heuristic",
        "ms",
        "gain",
        "tried",
    ]
    .map(String::from)
    .to_vec();
    let mut rows: Vec<Vec<String>> = tuned
        .iter()
        .map(|t| {
            vec![
                t.key.clone(),
                t.dir.name().into(),
                t.best.to_string(),
                format!("{:.4}", t.best_ms),
                t.heuristic.to_string(),
                format!("{:.4}", t.heuristic_ms),
                format!("{:.2}x", t.heuristic_ms / t.best_ms),
                t.tried.to_string(),
            ]
        })
        .collect();
    let (best, guess): (f64, f64) = tuned
        .iter()
        .map(|t| (t.best_ms, t.heuristic_ms))
        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    rows.push(vec![
        format!("all {} (sum)", tuned.len()),
        String::new(),
        String::new(),
        format!("{best:.4}"),
        String::new(),
        format!("{guess:.4}"),
        format!("{:.2}x", guess / best.max(f64::MIN_POSITIVE)),
        tuned.iter().map(|t| t.tried).sum::<usize>().to_string(),
    ]);
    table(&headers, &rows)
}

/// `cifar-kern tune`.
pub fn run(args: &TuneArgs) -> Result<()> {
    if args.math == Math::Fp32 {
        println!("nothing to tune in fp32: it runs one CUDA-core kernel per direction (kernels/conv.cu); tune --math tf32 chooses the tensor-core variants");
        return Ok(());
    }
    let gpu = need_gpu("tune")?;
    let batch = args.batch_size as usize;
    let mut passes = vec![(batch, Direction::ALL.to_vec())];
    if EVAL_BATCH != batch {
        passes.push((EVAL_BATCH, vec![Direction::Forward]));
    }
    let timer = ConvTimer::new(gpu);
    let mut tuned = Vec::new();
    for (batch, dirs) in &passes {
        let convs = shared_convs(&ModelKind::ALL, &[*batch]);
        for (i, conv) in convs.iter().enumerate() {
            let key = peers_key(&conv.x_shape, &conv.w_shape, &conv.win);
            progress(&format!("tuning batch {batch}: conv {}/{} {key}", i + 1, convs.len()));
            let bufs = ConvBuffers::new(gpu, &conv.x_shape, &conv.w_shape, &conv.win);
            for &dir in dirs {
                let guess = heuristic(dir, &bufs.shape, gpu.sm_count());
                let timed: Vec<(Variant, f64)> = candidates(dir, &bufs.shape, gpu.sm_count())
                    .into_iter()
                    .map(|v| {
                        let ms = median(&bufs.time(&timer, dir, ConvKernel::TensorCore(v), TUNE_WARMUP, TUNE_ITERS));
                        (v, ms)
                    })
                    .collect();
                let &(best, best_ms) = timed
                    .iter()
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .expect("there are candidates");
                let heuristic_ms = timed
                    .iter()
                    .find(|(v, _)| *v == guess)
                    .map(|(_, ms)| *ms)
                    .expect("the heuristic is a candidate");
                tuned.push(Tuned {
                    shape: bufs.shape,
                    key: key.clone(),
                    dir,
                    best,
                    best_ms,
                    heuristic: guess,
                    heuristic_ms,
                    tried: timed.len(),
                });
            }
        }
        progress_done();
        eprintln!("tuned {} conv shapes at batch {batch}", convs.len());
    }
    let base = match std::fs::read_to_string(&args.out) {
        Ok(text) => text,
        Err(_) => COMMITTED.to_string(),
    };
    let batches: Vec<String> = passes
        .iter()
        .map(|(b, dirs)| {
            if dirs.len() == 3 {
                format!("batch {b}")
            } else {
                format!("batch {b} (forward: evaluation)")
            }
        })
        .collect();
    let tuned_line = format!(
        "tuned sm_{}: {} ({} SMs), {}, {}; median of {TUNE_ITERS} launches",
        gpu.arch(),
        gpu.name(),
        gpu.sm_count(),
        today(),
        batches.join(" and ")
    );
    let text =
        table_text(&base, gpu.arch(), &tuned_line, &tuned).map_err(|e| anyhow!("{}: {e}", args.out.display()))?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    checkpoint::write_atomically(&args.out, text.as_bytes())
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    print!("{}", summary(&tuned));
    println!(
        "wrote {} ({} sm_{} entries)",
        args.out.display(),
        tuned.len(),
        gpu.arch()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::conv_tiles::{shape_key, TILES};
    use crate::layers::Window;

    fn tuned(dir: Direction, tile: usize, splits: usize) -> Tuned {
        let win = Window::same([3, 3], [1, 1], [32, 32]);
        let shape = ConvShape::new(&[128, 32, 32, 16], &[3, 3, 16, 16], &win);
        let v = Variant {
            tile: TILES[tile],
            splits,
        };
        Tuned {
            shape,
            key: "n128_h32_w32_c16_o16_k3_s1".into(),
            dir,
            best: v,
            best_ms: 0.05,
            heuristic: Variant { tile: TILES[0], splits },
            heuristic_ms: 0.1,
            tried: 4,
        }
    }

    #[test]
    fn the_new_table_replaces_this_cards_lines_and_keeps_the_others() {
        let key = shape_key(&tuned(Direction::Forward, 0, 1).shape);
        let base = format!(
            "# header\n# tuned sm_80: A100, 2026-01-01, batch 128\n# tuned sm_90: old H100 run\nsm_80 fwd {key} 128x16 1\nsm_90 fwd {key} 128x16 1\nsm_90 bwd_data {key} 128x16 1\n"
        );
        let new = [tuned(Direction::Forward, 2, 1), tuned(Direction::BackwardWeight, 3, 40)];
        let text = table_text(&base, 90, "tuned sm_90: H200, 2026-12-01, batch 128", &new).unwrap();
        let table = TileTable::parse(&text).unwrap();
        // sm_80's line stays; sm_90's old ones are gone, its new ones there.
        assert_eq!(table.len(), 3);
        let s = &new[0].shape;
        assert_eq!(table.get(80, Direction::Forward, s).unwrap().tile, TILES[0]);
        assert_eq!(table.get(90, Direction::Forward, s).unwrap().tile, TILES[2]);
        assert_eq!(table.get(90, Direction::BackwardData, s), None);
        assert_eq!(
            table.get(90, Direction::BackwardWeight, s),
            Some(Variant {
                tile: TILES[3],
                splits: 40
            })
        );
        // The header: the format, sm_80's tuning line, the new sm_90 line (the old one dropped).
        assert!(
            text.contains("# tuned sm_80: A100, 2026-01-01, batch 128\n# tuned sm_90: H200, 2026-12-01, batch 128\n"),
            "{text}"
        );
        assert!(!text.contains("old H100"), "{text}");
        assert!(text.starts_with("# The tensor-core conv variant"), "{text}");
        // The committed table is a valid base too.
        TileTable::parse(&table_text(COMMITTED, 90, "tuned sm_90: x", &new).unwrap()).unwrap();
    }

    #[test]
    fn a_bad_base_table_is_an_error() {
        assert!(table_text("sm_90 fwd key 1x1 1\n", 90, "x", &[])
            .unwrap_err()
            .contains("line 1"));
    }

    #[test]
    fn today_is_a_calendar_date() {
        let date = today();
        assert_eq!(date.len(), 10, "{date}");
        assert!(
            date.starts_with("20") && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-',
            "{date}"
        );
    }

    #[test]
    fn the_summary_ends_with_the_totals() {
        let text = summary(&[tuned(Direction::Forward, 2, 1), tuned(Direction::BackwardData, 1, 1)]);
        let last = text.lines().last().unwrap();
        assert!(
            last.starts_with("all 2 (sum)") && last.contains("0.1000") && last.contains("2.00x"),
            "{text}"
        );
        let fwd = text.lines().find(|l| l.contains(" fwd ")).unwrap();
        let cells: Vec<&str> = fwd.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(
            cells,
            [
                "n128_h32_w32_c16_o16_k3_s1",
                "fwd",
                "64x64 1",
                "0.0500",
                "128x16 1",
                "0.1000",
                "2.00x",
                "4"
            ]
        );
    }
}
