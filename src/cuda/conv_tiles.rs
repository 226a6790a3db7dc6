//! Which tensor-core kernel computes each convolution (`kernels/conv_tc.cu`):
//! its result tile and, for the weight gradient, how many chunks of rows
//! split the reduction.
//!
//! The choice comes from a committed table (`conv_tiles.txt`, written by
//! `cifar-kern tune` on a GPU), keyed by compute capability, direction and
//! the whole conv shape, batch included; a shape or card the table does not
//! name gets [`heuristic`]. Nothing is timed during training: a timed choice
//! could differ between two runs with one seed, and the weight gradient's
//! chunking changes its bits.

use super::conv_shape::ConvShape;
use std::collections::BTreeMap;
use std::fmt;

/// The three products of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Forward,
    BackwardData,
    BackwardWeight,
}

impl Direction {
    pub const ALL: [Direction; 3] = [Direction::Forward, Direction::BackwardData, Direction::BackwardWeight];

    /// The name in the table and in bench ids (`conv_<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Direction::Forward => "fwd",
            Direction::BackwardData => "bwd_data",
            Direction::BackwardWeight => "bwd_weight",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// `(rows, cols, reduction)` of the GEMM: for the data gradient of a
    /// strided conv, the largest phase's rows and reduction.
    pub fn gemm(self, s: &ConvShape) -> (usize, usize, usize) {
        let u = |v: i32| v as usize;
        match self {
            Direction::Forward => (s.out_rows(), u(s.o), s.k()),
            Direction::BackwardData => {
                let phase = |v: i32, st: i32| u(v).div_ceil(u(st));
                let rows = u(s.n) * phase(s.h, s.stride_h) * phase(s.w, s.stride_w);
                (rows, u(s.c), phase(s.kh, s.stride_h) * phase(s.kw, s.stride_w) * u(s.o))
            }
            Direction::BackwardWeight => (s.k(), u(s.o), s.out_rows()),
        }
    }

    /// Multiply-adds of the product (the data gradient's true ones, without
    /// the zero taps of a stride).
    pub fn flops(self, s: &ConvShape) -> f64 {
        let (m, n, k) = Direction::Forward.gemm(s);
        2.0 * (m * n * k) as f64
    }
}

/// A block's result tile in `kernels/conv_tc.cu` (`rows x cols`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tile {
    pub rows: usize,
    pub cols: usize,
}

/// Every tile conv_tc.cu instantiates (`TC_TILE`).
pub const TILES: [Tile; 4] = [
    Tile { rows: 128, cols: 16 },
    Tile { rows: 128, cols: 32 },
    Tile { rows: 64, cols: 64 },
    Tile { rows: 128, cols: 64 },
];

impl fmt::Display for Tile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.rows, self.cols)
    }
}

impl Tile {
    fn parse(text: &str) -> Option<Self> {
        let (r, c) = text.split_once('x')?;
        let tile = Tile {
            rows: r.parse().ok()?,
            cols: c.parse().ok()?,
        };
        TILES.contains(&tile).then_some(tile)
    }

    /// Blocks covering a `rows x cols` result.
    pub fn blocks(self, rows: usize, cols: usize) -> usize {
        rows.div_ceil(self.rows) * cols.div_ceil(self.cols)
    }
}

/// One tensor-core kernel configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Variant {
    pub tile: Tile,
    /// Chunks of rows the weight gradient's reduction is split into (a
    /// partial result each, added in chunk order); 1 for the other
    /// directions.
    pub splits: usize,
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.tile, self.splits)
    }
}

/// The rows of the weight gradient's reduction per chunk for `splits`
/// chunks of `rows`: a whole number of the kernels' reduction steps (16), so
/// every chunk but the last is full.
pub fn chunk_rows(rows: usize, splits: usize) -> usize {
    rows.div_ceil(splits.max(1)).next_multiple_of(16).max(16)
}

/// The reduction steps a weight-gradient chunk should keep at least, so the
/// partials (written and re-read once each) stay a small part of the work.
const MIN_CHUNK_ROWS: usize = 256;

/// Resident blocks of 128 threads per SM the heuristic assumes (shared
/// memory allows 4 to 7 of conv_tc.cu's tiles on sm_80 and sm_90).
const BLOCKS_PER_SM: usize = 4;

/// An operand element staged through shared memory costs about as much
/// time as this many tensor-core multiply-adds (the heuristic's guess).
const LOAD_COST: usize = 16;

/// The variant for a shape no table names: the tile that wastes least of the
/// work of its partial tiles and partial waves on `sm_count` SMs, ties to
/// the larger tile; the weight gradient split into enough chunks for about
/// two waves.
pub fn heuristic(dir: Direction, s: &ConvShape, sm_count: usize) -> Variant {
    let (rows, cols, reduction) = dir.gemm(s);
    let slots = sm_count.max(1) * BLOCKS_PER_SM;
    let splits_for = |tile: Tile| match dir {
        Direction::BackwardWeight => {
            let most = reduction.div_ceil(MIN_CHUNK_ROWS).max(1);
            (2 * slots).div_ceil(tile.blocks(rows, cols)).clamp(1, most)
        }
        _ => 1,
    };
    // Cost: waves of blocks times a block's time per reduction index, its
    // multiply-adds plus its operand loads at LOAD_COST each (a narrow tile
    // re-reads the wide operand more often).
    let cost = |tile: Tile| {
        let splits = splits_for(tile);
        let blocks = tile.blocks(rows, cols) * splits;
        let per_step = (tile.rows * tile.cols + LOAD_COST * (tile.rows + tile.cols)) as f64;
        blocks.div_ceil(slots) as f64 * per_step * reduction.div_ceil(splits) as f64
    };
    let tile = TILES
        .into_iter()
        .rev()
        .min_by(|a, b| cost(*a).total_cmp(&cost(*b)))
        .expect("there are tiles");
    Variant {
        tile,
        splits: splits_for(tile),
    }
}

/// Every variant `cifar-kern tune` times for direction `dir` of `s`: each
/// tile; for the weight gradient each with 1 chunk and with about 1/4, 1/2,
/// 1 and 2 times [`heuristic`]'s chunks (no two cutting the rows into the
/// same number of chunks, no workspace past the kernels' 32-bit indices).
/// The heuristic's own variant is among them.
pub fn candidates(dir: Direction, s: &ConvShape, sm_count: usize) -> Vec<Variant> {
    let guess = heuristic(dir, s, sm_count);
    let splits = match dir {
        Direction::BackwardWeight => {
            let h = guess.splits;
            vec![1, h.div_ceil(4), h.div_ceil(2), h, 2 * h]
        }
        _ => vec![1],
    };
    let rows = s.out_rows();
    let result = s.k() * s.o as usize;
    let mut out: Vec<Variant> = Vec::new();
    for tile in TILES {
        let mut chunk_counts = Vec::new();
        for &n in &splits {
            let chunks = rows.div_ceil(chunk_rows(rows, n)).max(1);
            if chunk_counts.contains(&chunks) || chunks * result > i32::MAX as usize / 2 {
                continue;
            }
            chunk_counts.push(chunks);
            out.push(Variant { tile, splits: n });
        }
    }
    if !out.contains(&guess) {
        out.push(guess);
    }
    out
}

/// Every field of a [`ConvShape`], in order: how the table keys a shape
/// (compared without formatting anything, as the trainer looks shapes up
/// at every conv).
type ShapeFields = [i32; 13];

fn shape_fields(s: &ConvShape) -> ShapeFields {
    [
        s.n, s.h, s.w, s.c, s.oh, s.ow, s.o, s.kh, s.kw, s.stride_h, s.stride_w, s.pad_h, s.pad_w,
    ]
}

fn shape_of(f: ShapeFields) -> ConvShape {
    let [n, h, w, c, oh, ow, o, kh, kw, stride_h, stride_w, pad_h, pad_w] = f;
    ConvShape {
        n,
        h,
        w,
        c,
        oh,
        ow,
        o,
        kh,
        kw,
        stride_h,
        stride_w,
        pad_h,
        pad_w,
    }
}

/// The key of a shape in the table's text: every field of [`ConvShape`].
pub fn shape_key(s: &ConvShape) -> String {
    format!(
        "n{}.h{}.w{}.c{}.oh{}.ow{}.o{}.k{}x{}.s{}x{}.p{}x{}",
        s.n, s.h, s.w, s.c, s.oh, s.ow, s.o, s.kh, s.kw, s.stride_h, s.stride_w, s.pad_h, s.pad_w
    )
}

/// The fields of a [`shape_key`], or None if `key` is not one.
fn parse_shape_key(key: &str) -> Option<ShapeFields> {
    let numbers: Vec<i32> = key
        .split(|c: char| !c.is_ascii_digit())
        .filter(|n| !n.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let fields = ShapeFields::try_from(numbers).ok()?;
    (shape_key(&shape_of(fields)) == key).then_some(fields)
}

/// The committed table: `sm_<arch> <direction> <shape key> <tile> <splits>`
/// per line, `#` comments.
pub const COMMITTED: &str = include_str!("conv_tiles.txt");

/// Tuned variants by (compute capability as 10 x major + minor, direction,
/// shape).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TileTable {
    entries: BTreeMap<(u32, Direction, ShapeFields), Variant>,
}

impl TileTable {
    /// Parses a table; an error names the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut table = TileTable::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = || {
                format!(
                    "conv tile table, line {}: expected `sm_<arch> <direction> <shape> <tile> <splits>`, got {line:?}",
                    i + 1
                )
            };
            let f: Vec<&str> = line.split_whitespace().collect();
            let [arch, dir, key, tile, splits] = f[..] else {
                return Err(bad());
            };
            let arch = arch.strip_prefix("sm_").and_then(|a| a.parse().ok()).ok_or_else(bad)?;
            let dir = Direction::from_name(dir).ok_or_else(bad)?;
            let shape = parse_shape_key(key).map(shape_of).ok_or_else(bad)?;
            let tile = Tile::parse(tile).ok_or_else(bad)?;
            let splits: usize = splits.parse().ok().filter(|&s| s >= 1).ok_or_else(bad)?;
            if dir != Direction::BackwardWeight && splits != 1 {
                return Err(bad());
            }
            table.insert(arch, dir, &shape, Variant { tile, splits });
        }
        Ok(table)
    }

    /// The committed table (a unit test parses it).
    pub fn committed() -> Self {
        Self::parse(COMMITTED).expect("src/cuda/conv_tiles.txt parses")
    }

    pub fn insert(&mut self, arch: u32, dir: Direction, s: &ConvShape, variant: Variant) {
        self.entries.insert((arch, dir, shape_fields(s)), variant);
    }

    pub fn get(&self, arch: u32, dir: Direction, s: &ConvShape) -> Option<Variant> {
        self.entries.get(&(arch, dir, shape_fields(s))).copied()
    }

    /// The table's variant, else the heuristic's.
    pub fn choose(&self, arch: u32, sm_count: usize, dir: Direction, s: &ConvShape) -> Variant {
        self.get(arch, dir, s).unwrap_or_else(|| heuristic(dir, s, sm_count))
    }

    /// Drops every entry of card `arch` (before `tune` adds its new ones).
    pub fn remove_arch(&mut self, arch: u32) {
        self.entries.retain(|(a, _, _), _| *a != arch);
    }

    /// The entries of card `arch`.
    pub fn count_arch(&self, arch: u32) -> usize {
        self.entries.keys().filter(|(a, _, _)| *a == arch).count()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The table as text, entries sorted, after `header` (comment lines).
    pub fn to_text(&self, header: &str) -> String {
        let mut out = String::new();
        for line in header.lines() {
            out.push_str(&format!("# {line}\n"));
        }
        for ((arch, dir, fields), v) in &self.entries {
            let key = shape_key(&shape_of(*fields));
            out.push_str(&format!("sm_{arch} {} {key} {} {}\n", dir.name(), v.tile, v.splits));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::Window;

    fn resnet_stage1() -> ConvShape {
        ConvShape::new(
            &[128, 32, 32, 16],
            &[3, 3, 16, 16],
            &Window::same([3, 3], [1, 1], [32, 32]),
        )
    }

    #[test]
    fn the_committed_table_parses() {
        TileTable::committed();
    }

    #[test]
    fn a_table_entry_wins_over_the_heuristic_only_on_its_card() {
        let s = resnet_stage1();
        let tuned = Variant {
            tile: TILES[2],
            splits: 7,
        };
        let text = format!("# tuned\nsm_90 bwd_weight {} 64x64 7  # 0.1 ms\n", shape_key(&s));
        let table = TileTable::parse(&text).unwrap();
        assert_eq!(table.choose(90, 132, Direction::BackwardWeight, &s), tuned);
        assert_eq!(
            table.choose(80, 108, Direction::BackwardWeight, &s),
            heuristic(Direction::BackwardWeight, &s, 108)
        );
        assert_eq!(
            table.choose(90, 132, Direction::Forward, &s),
            heuristic(Direction::Forward, &s, 132)
        );
        // What to_text writes, parse reads back.
        assert_eq!(TileTable::parse(&table.to_text("a\nb")).unwrap(), table);
    }

    #[test]
    fn bad_table_lines_are_refused_with_their_number() {
        for bad in [
            "sm_90 fwd key 128x16",
            "sm_9x fwd key 128x16 1",
            "sm_90 sideways key 128x16 1",
            "sm_90 fwd key 96x16 1",
            "sm_90 fwd key 128x16 2",
            "sm_90 bwd_weight key 128x16 0",
        ] {
            let err = TileTable::parse(&format!("# ok\n{bad}\n")).unwrap_err();
            assert!(err.contains("line 2"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_heuristic_fits_narrow_gemms_and_fills_the_card() {
        let s = resnet_stage1();
        // 131,072 rows x 16 columns: a 16-column tile, no idle columns.
        let fwd = heuristic(Direction::Forward, &s, 132);
        assert_eq!((fwd.tile, fwd.splits), (TILES[0], 1));
        // 131,072 rows x 64 columns: several waves of any tile, so the
        // widest tile, which loads each operand least often.
        let wide = ConvShape::new(&[128, 32, 32, 64], &[1, 1, 64, 64], &Window::valid([1, 1], [1, 1]));
        assert_eq!(heuristic(Direction::Forward, &wide, 132).tile, TILES[3]);
        // The weight gradient: 144 x 16 is 2 tiles; split into chunks of
        // whole steps, at least 256 rows each, for about two waves.
        let w = heuristic(Direction::BackwardWeight, &s, 132);
        assert_eq!(w.tile, TILES[0]);
        assert!(w.splits > 100 && w.splits <= 131_072 / 256, "{w:?}");
        assert!(chunk_rows(131_072, w.splits).is_multiple_of(16));
        // Few rows: no split below 256 rows per chunk.
        let tiny = ConvShape::new(&[2, 4, 4, 64], &[3, 3, 64, 64], &Window::same([3, 3], [1, 1], [4, 4]));
        assert_eq!(heuristic(Direction::BackwardWeight, &tiny, 132).splits, 1);
    }

    #[test]
    fn tune_candidates_cover_every_tile_and_the_heuristic() {
        let s = resnet_stage1();
        let fwd = candidates(Direction::Forward, &s, 132);
        assert_eq!(fwd.iter().map(|v| v.tile).collect::<Vec<_>>(), TILES);
        assert!(fwd.iter().all(|v| v.splits == 1));
        let w = candidates(Direction::BackwardWeight, &s, 132);
        let h = heuristic(Direction::BackwardWeight, &s, 132);
        assert!(w.contains(&h));
        for tile in TILES {
            let splits: Vec<usize> = w.iter().filter(|v| v.tile == tile).map(|v| v.splits).collect();
            assert_eq!(
                splits,
                [1, h.splits.div_ceil(4), h.splits.div_ceil(2), h.splits, 2 * h.splits]
            );
        }
        // Few rows (32): the heuristic's 1 chunk and twice that, each tried once per tile.
        let tiny = ConvShape::new(&[2, 4, 4, 64], &[3, 3, 64, 64], &Window::same([3, 3], [1, 1], [4, 4]));
        let splits: Vec<usize> = candidates(Direction::BackwardWeight, &tiny, 132)
            .iter()
            .map(|v| v.splits)
            .collect();
        assert_eq!(splits, [1, 2].repeat(TILES.len()));
    }

    #[test]
    fn remove_arch_keeps_the_other_cards() {
        let s = resnet_stage1();
        let text = format!("sm_90 fwd {k} 64x64 1\nsm_80 fwd {k} 128x16 1\n", k = shape_key(&s));
        let mut table = TileTable::parse(&text).unwrap();
        assert_eq!((table.count_arch(90), table.count_arch(80)), (1, 1));
        table.remove_arch(90);
        assert_eq!((table.len(), table.count_arch(80)), (1, 1));
        assert_eq!(table.get(80, Direction::Forward, &s).unwrap().tile, TILES[0]);
    }

    #[test]
    fn chunks_cover_the_rows_in_whole_steps() {
        for rows in [1, 15, 16, 17, 1000, 131_072] {
            for splits in [1, 2, 3, 7, 64, 5000] {
                let c = chunk_rows(rows, splits);
                assert_eq!(c % 16, 0);
                assert!(rows.div_ceil(c) <= splits.max(1), "rows {rows} splits {splits}");
            }
        }
    }

    #[test]
    fn the_strided_data_gradient_reduces_over_its_phase_only() {
        // ResNet's 3x3/2 conv 32x32 -> 16x16: four phases of 16x16 pixels,
        // the largest with 2 x 2 taps of 32 output channels.
        let s = ConvShape::new(
            &[128, 32, 32, 16],
            &[3, 3, 16, 32],
            &Window::same([3, 3], [2, 2], [32, 32]),
        );
        assert_eq!(Direction::BackwardData.gemm(&s), (128 * 16 * 16, 16, 4 * 32));
        assert_eq!(Direction::Forward.gemm(&s), (128 * 16 * 16, 32, 144));
    }
}
