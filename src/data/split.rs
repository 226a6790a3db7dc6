//! The tutorial's 45,000 / 5,000 train/validation split of the training images.
//!
//! The tutorial draws it with torch `random_split(..., [45000, 5000])` and a
//! generator seeded with 42; `tutorial_val_indices.txt` (one index per line,
//! into data_batch_1..5 concatenated) is the validation part it produced,
//! embedded in the binary so that every run validates on the same images.
//! torch's training subset lists the other 45,000 indices in a random order;
//! we keep them in increasing order instead, which changes nothing since the
//! training loader reshuffles every epoch.

/// Images in data_batch_1..5.
pub const NUM_TRAIN_IMAGES: usize = 50_000;
pub const NUM_VAL_IMAGES: usize = 5_000;

const TUTORIAL_VAL_INDICES: &str = include_str!("tutorial_val_indices.txt");

/// Indices into the 50,000 training images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// The remaining 45,000, increasing.
    pub train: Vec<usize>,
    /// The tutorial's 5,000 validation images, in its order.
    pub val: Vec<usize>,
}

impl Split {
    pub fn tutorial() -> Self {
        let val: Vec<usize> = TUTORIAL_VAL_INDICES
            .lines()
            .map(|line| {
                line.trim()
                    .parse()
                    .expect("tutorial_val_indices.txt holds one index per line")
            })
            .collect();
        let mut in_val = vec![false; NUM_TRAIN_IMAGES];
        for &i in &val {
            assert!(!in_val[i], "tutorial_val_indices.txt lists {i} twice");
            in_val[i] = true;
        }
        assert_eq!(val.len(), NUM_VAL_IMAGES, "tutorial_val_indices.txt length");
        let train = (0..NUM_TRAIN_IMAGES).filter(|&i| !in_val[i]).collect();
        Split { train, val }
    }
}
