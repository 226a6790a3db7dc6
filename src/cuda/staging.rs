//! How training batches reach the GPU: through page-locked (pinned) host
//! buffers, so the copy is a true asynchronous DMA on our stream instead of
//! a pageable upload the driver must stage itself.
//!
//! A ring of [`SLOTS`] pinned buffer pairs (images, labels): batch `n` is
//! written into slot `n % SLOTS` and its copy enqueued on the stream. Before
//! the host writes a slot again it waits for that slot's previous copy (a
//! cudarc event on the pinned buffer), which was enqueued `SLOTS` batches
//! ago: that bounds how far the host runs ahead of the GPU without ever
//! draining the GPU's queue, as a step that read a result back would.

use super::{DeviceBuffer, Gpu, GpuTensor};
use crate::failure::OrFail;
use crate::tensor::Tensor;
use cudarc::driver::PinnedHostSlice;
use std::sync::Arc;

/// Pinned buffer pairs in the ring: the batch being written, and the one
/// whose copy may still be running.
const SLOTS: usize = 2;

/// Page-locked buffers for one batch.
struct Slot {
    images: PinnedHostSlice<f32>,
    labels: PinnedHostSlice<u32>,
}

/// The ring of pinned buffers for batches of one shape.
pub struct BatchStaging {
    image_shape: Vec<usize>,
    slots: Vec<Slot>,
    next: usize,
}

impl BatchStaging {
    /// Buffers for batches of `image_shape` (`[n, h, w, c]`) and `n` labels.
    pub fn new(gpu: &Gpu, image_shape: &[usize]) -> Self {
        let (images, labels) = (image_shape.iter().product(), image_shape[0]);
        let slots = (0..SLOTS)
            .map(|_| Slot {
                images: gpu.alloc_pinned(images),
                labels: gpu.alloc_pinned(labels),
            })
            .collect();
        BatchStaging {
            image_shape: image_shape.to_vec(),
            slots,
            next: 0,
        }
    }

    /// The shape of the images this staging takes.
    pub fn image_shape(&self) -> &[usize] {
        &self.image_shape
    }

    /// The batch on the GPU: its images as a tensor, its labels as a buffer.
    /// Enqueued; the host goes on at once.
    pub fn upload(&mut self, gpu: &Gpu, images: &Tensor<f32>, labels: &[u32]) -> (GpuTensor<f32>, DeviceBuffer<u32>) {
        assert_eq!(images.shape(), self.image_shape, "a batch of another shape");
        assert_eq!(labels.len(), self.image_shape[0], "one label per image");
        let slot = &mut self.slots[self.next];
        self.next = (self.next + 1) % SLOTS;
        let waited = || "waiting for an earlier batch's copy".to_string();
        slot.images
            .as_mut_slice()
            .or_fail(waited)
            .copy_from_slice(images.data());
        slot.labels.as_mut_slice().or_fail(waited).copy_from_slice(labels);
        let device_images = gpu.upload_pinned(&slot.images);
        (
            Tensor::from_gpu(images.shape(), device_images),
            DeviceBuffer {
                data: Arc::new(gpu.upload_pinned(&slot.labels)),
            },
        )
    }
}
