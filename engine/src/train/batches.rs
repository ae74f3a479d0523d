//! Mini-batch index plans, drawn on the device so that selecting a batch is one
//! `index_select` of a tensor that already lives there.

use tch::{Device, Kind, Tensor};

/// Index tensors (int64, on `device`) covering `0..n` in batches.
///
/// With `shuffle`, the order is a fresh permutation from libtorch's generator (seeded by
/// the caller through `tch::manual_seed`). With `drop_last`, a short final batch is
/// dropped, as in the papers' loaders; it is kept when it would be the only batch.
pub fn plan(n: i64, batch: i64, shuffle: bool, drop_last: bool, device: Device) -> Vec<Tensor> {
    if n <= 0 || batch <= 0 {
        return Vec::new();
    }
    let order = if shuffle {
        Tensor::randperm(n, (Kind::Int64, device))
    } else {
        Tensor::arange(n, (Kind::Int64, device))
    };
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let len = batch.min(n - start);
        if len < batch && drop_last && start > 0 {
            break;
        }
        out.push(order.narrow(0, start, len));
        start += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_every_index_once() {
        tch::manual_seed(3);
        let parts = plan(10, 4, true, false, Device::Cpu);
        assert_eq!(parts.len(), 3);
        let all = Tensor::cat(&parts, 0).sort(0, false).0;
        assert!(all.equal(&Tensor::arange(10, (Kind::Int64, Device::Cpu))));
    }

    #[test]
    fn drop_last_drops_the_short_batch_but_never_everything() {
        assert_eq!(plan(10, 4, false, true, Device::Cpu).len(), 2);
        assert_eq!(plan(3, 4, false, true, Device::Cpu).len(), 1);
    }
}
